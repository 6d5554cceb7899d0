// Compiled by the build script (tsc) during the build; TypeScript itself is pruned from the slug.
import { createServer } from "http";

const greeting: string = "Hello from TypeScript";
createServer((_req, res) => res.end(`${greeting} on Node.js ${process.version}\n`)).listen(Number(process.env.PORT ?? 5000));
