// The browser side of tests/browser: records every securitypolicyviolation event of the page and
// makes, one at a time, the requests a Chime SDK app makes. Loaded as a same-origin classic
// script (every policy under test allows 'self' scripts); the test calls chimeProbe.run(probes)
// through WebDriver and compares what happened with the checker's verdicts.
"use strict";

(() => {
  const violations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    violations.push({
      blockedURI: event.blockedURI,
      effectiveDirective: event.effectiveDirective,
      violatedDirective: event.violatedDirective,
      disposition: event.disposition,
      originalPolicy: event.originalPolicy,
    });
  });

  // A 1x1 PNG, for the blob: image.
  const PNG = Uint8Array.from(
    atob(
      "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    ),
    (c) => c.charCodeAt(0),
  );
  // The smallest valid WebAssembly module: magic and version.
  const WASM = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);

  const outcome = (ok, detail) => ({ ok, detail: String(detail) });

  function settle(start, done) {
    const timer = setTimeout(() => done(outcome(false, "no answer")), 10000);
    try {
      start((ok, detail) => {
        clearTimeout(timer);
        done(outcome(ok, detail));
      });
    } catch (error) {
      clearTimeout(timer);
      done(outcome(false, `threw ${error}`));
    }
  }

  const attempts = {
    async fetch(url) {
      try {
        const response = await fetch(url, { cache: "no-store" });
        return outcome(true, `HTTP ${response.status}`);
      } catch (error) {
        return outcome(false, error);
      }
    },
    websocket(url) {
      return new Promise((done) =>
        settle((finish) => {
          const socket = new WebSocket(url);
          socket.onopen = () => {
            socket.close();
            finish(true, "open");
          };
          socket.onerror = () => finish(false, "error");
        }, done),
      );
    },
    script(url) {
      return new Promise((done) =>
        settle((finish) => {
          const element = document.createElement("script");
          element.src = url;
          element.onload = () => finish(true, "loaded");
          element.onerror = () => finish(false, "error");
          document.head.appendChild(element);
        }, done),
      );
    },
    blobScript() {
      const url = URL.createObjectURL(new Blob(["self.blobScriptRan = true;"], { type: "text/javascript" }));
      return attempts.script(url);
    },
    blobWorker() {
      return new Promise((done) =>
        settle((finish) => {
          const source = new Blob(["postMessage('hello');"], { type: "text/javascript" });
          const worker = new Worker(URL.createObjectURL(source));
          worker.onmessage = () => {
            worker.terminate();
            finish(true, "message");
          };
          worker.onerror = () => finish(false, "error");
        }, done),
      );
    },
    blobImage() {
      return new Promise((done) =>
        settle((finish) => {
          const image = new Image();
          image.onload = () => finish(true, "loaded");
          image.onerror = () => finish(false, "error");
          image.src = URL.createObjectURL(new Blob([PNG], { type: "image/png" }));
        }, done),
      );
    },
    async wasm() {
      try {
        await WebAssembly.compile(WASM);
        return outcome(true, "compiled");
      } catch (error) {
        return outcome(false, error);
      }
    },
  };

  async function waitForViolationAfter(count, limit) {
    const deadline = Date.now() + limit;
    while (violations.length <= count && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  window.chimeProbe = {
    violations,
    // probes: [{name, method, url}]; resolves to {results: {name: {ok, detail}}, violations}.
    async run(probes) {
      const results = {};
      for (const probe of probes) {
        const before = violations.length;
        results[probe.name] = await attempts[probe.method](probe.url);
        if (!results[probe.name].ok) {
          // A blocked request's violation event is a task of its own: let it arrive before
          // the next probe starts. (The test attributes events by URL and directive anyway.)
          await waitForViolationAfter(before, 3000);
        }
      }
      return { results, violations: violations.slice() };
    },
  };
})();
