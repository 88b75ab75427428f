// Reads raw HTTP/1 request bytes on stdin and prints, as JSON, what Node's own HTTP server reads
// from them with its lenient parser (llhttp, insecureHTTPParser): for each request, its raw
// header and trailer lines. Node answers every request, so pipelined requests are all read.
"use strict";
const http = require("http");
const net = require("net");

const chunks = [];
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  const raw = Buffer.concat(chunks);
  const requests = [];
  const errors = [];
  const server = http.createServer({ insecureHTTPParser: true }, (req, res) => {
    const seen = { method: req.method, url: req.url, headers: req.rawHeaders, trailers: [] };
    requests.push(seen);
    req.on("data", () => {});
    req.on("end", () => {
      seen.trailers = req.rawTrailers;
      res.end("ok");
    });
  });
  server.on("clientError", (error, socket) => {
    errors.push(String(error.code || error.message));
    socket.destroy();
  });
  server.listen(0, "127.0.0.1", () => {
    const socket = net.connect(server.address().port, "127.0.0.1", () => socket.end(raw));
    socket.on("data", () => {});
    const finish = () => {
      server.close();
      process.stdout.write(JSON.stringify({ requests, errors }));
      process.exit(0);
    };
    socket.on("close", finish);
    socket.on("error", finish);
    setTimeout(finish, 3000);
  });
});
