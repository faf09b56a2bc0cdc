/*
 * SelfHeal browser error capture (readable source; priv/static/self_heal.min.js
 * is the same code minified by hand, see docs/browser.md).
 *
 * Captures uncaught errors (window "error") and unhandled promise rejections
 * ("unhandledrejection") and POSTs them in batches to
 * {endpoint}/capture?key={key} as {"events": [...], "dropped": n}.
 *
 * Configuration, read once when the script runs, first match wins:
 *   window.SelfHeal = {endpoint: "https://errors.example.com", key: "pk_...", release: "1.2.3"}
 *   <script src="self_heal.min.js" data-endpoint="..." data-key="pk_..." data-release="..."></script>
 * Without an endpoint, the origin the script was loaded from is used; without
 * a key nothing is installed.
 *
 * Batching: one request at most per second (DELAY); a batch is sent DELAY
 * after its first event, or at once when it reaches BATCH events and the last
 * request is older than DELAY. At most MAX events wait; more are dropped and
 * counted in "dropped". An event whose message and stack equal those of an
 * event already in the batch is left out. When the page is hidden or left
 * (visibilitychange to hidden, pagehide) the batch goes out with
 * navigator.sendBeacon. Bodies are text/plain JSON strings, so neither fetch
 * nor sendBeacon needs a CORS preflight.
 *
 * window.SelfHeal.capture(error) reports a caught error; window.SelfHeal.flush()
 * sends the batch now. The script never throws: every entry point catches.
 */
(function (win) {
  try {
    var doc = document;
    var nav = navigator;
    var DELAY = 1000;
    var BATCH = 10;
    var MAX = 50;
    var config = win.SelfHeal || {};
    var script = doc.currentScript || doc.querySelector("script[data-key]");

    if (config.capture) return; // already installed

    var setting = function (name) {
      return config[name] || (script && script.getAttribute("data-" + name));
    };

    var key = setting("key");
    var origin = script && /^https?:\/\/[^/]+/.exec(script.src);
    var endpoint = setting("endpoint") || (origin && origin[0]);
    var release = setting("release") || null;

    if (!key || !endpoint) return;

    var url = endpoint.replace(/\/+$/, "") + "/capture?key=" + encodeURIComponent(key);
    var queue = [];
    var seen = {};
    var dropped = 0;
    var timer = 0;
    var last = 0;

    // Any value as bounded text; never throws (String() can, on odd objects).
    var text = function (value, max) {
      try {
        value = typeof value == "object" ? JSON.stringify(value) : String(value);
      } catch (e) {
        value = typeof value;
      }
      return (value || "").slice(0, max);
    };

    var flush = function (beacon) {
      try {
        clearTimeout(timer);
        timer = 0;
        if (!queue.length) return;
        var body = JSON.stringify({ events: queue, dropped: dropped });
        queue = [];
        seen = {};
        dropped = 0;
        last = Date.now();
        // a string body is sent as text/plain;charset=UTF-8: a "simple"
        // request, no preflight; beacons and keepalive bodies are limited to 64 KiB
        if (beacon && nav.sendBeacon && nav.sendBeacon(url, body)) return;
        fetch(url, { method: "POST", body: body, keepalive: body.length < 6e4 }).catch(
          function () {}
        );
      } catch (e) {}
    };

    // kind: "error" | "unhandledrejection"; error: the thrown value;
    // event: the ErrorEvent, for errors without an Error object.
    var add = function (kind, error, event) {
      try {
        event = event || {};
        var isError = error && typeof error == "object" && "message" in error;
        var full = text(isError ? error.message : error != null ? error : event.message, 1e5);
        var message = full.slice(0, 1e3);
        // V8 stacks start with "Type: message": a long message is cut there
        // too, so the frames fit in the stack's bound
        var stack = text(
          isError && error.stack
            ? String(error.stack).replace(full, function () {
                return message;
              })
            : "",
          4e3
        );
        if (!stack && event.filename) {
          stack = "    at " + event.filename + ":" + event.lineno + ":" + event.colno;
        }
        var id = message + "\n" + stack;
        if (seen[id]) return;
        if (queue.length >= MAX) return dropped++;
        seen[id] = 1;
        queue.push({
          type: text((isError && error.name) || (kind == "error" ? "Error" : "UnhandledRejection"), 200),
          message: message,
          stack: stack,
          url: location.href,
          user_agent: nav.userAgent,
          release: release,
          timestamp: Date.now(),
          kind: kind
        });
        if (queue.length >= BATCH && Date.now() - last >= DELAY) flush();
        else if (!timer) timer = setTimeout(flush, DELAY);
      } catch (e) {}
    };

    win.addEventListener("error", function (event) {
      // resource load errors do not bubble to window; only script errors get here
      add("error", event.error, event);
    });
    win.addEventListener("unhandledrejection", function (event) {
      add("unhandledrejection", event.reason);
    });
    win.addEventListener("pagehide", function () {
      flush(1);
    });
    doc.addEventListener("visibilitychange", function () {
      if (doc.visibilityState == "hidden") flush(1);
    });

    config.capture = function (error) {
      add("error", error);
    };
    config.flush = function () {
      flush();
    };
    win.SelfHeal = config;
  } catch (e) {}
})(window);
