// Preloaded into server-everything (`node --import ./loopback.mjs`): its Streamable HTTP
// transport calls `app.listen(PORT)`, which binds every interface; the test harness binds
// only 127.0.0.1, so a listen() given a port without a host gets 127.0.0.1.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const portOnly = (typeof args[0] === "number" || typeof args[0] === "string") &&
    (args.length === 1 || typeof args[1] === "function");
  if (portOnly) {
    args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
