// The example Node.js app: an Express page that says which dyno served it.
const express = require("express");

const app = express();
const port = process.env.PORT || 5000;

app.get("/", (req, res) => {
  res.type("text/plain").send(`Hello from ${process.env.DYNO || "a dyno"} (Node.js + Express on dynod)\n`);
});

app.listen(port, () => console.log(`listening on ${port}`));
