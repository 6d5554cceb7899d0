// A web server that says how its dependencies were installed.
const http = require("http");
const ms = require("ms");

http.createServer((req, res) => {
  res.end(`Hello from pnpm on Node.js ${process.version} (ms says ${ms(60000)})\n`);
}).listen(process.env.PORT || 5000);
