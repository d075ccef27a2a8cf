// Runs CPU forward passes off the page's thread. LightClient starts it as a
// module worker when given `workerUrl`; it instantiates its own copy of the wasm
// (the same choice as the page's `init()`: simd128 where supported; add
// `?kernel=portable` to `workerUrl` to force the portable build) and answers
// {id, input} (an encoded pass request) with {id, digest} or {id, error}, and
// {id, query: "kernel"} with {id, kernel} (which build it runs, for tests).
import init, { cpuDigest, kernel } from "./tpow_light.js";

const ready = init({ kernel: new URL(self.location.href).searchParams.get("kernel") || "auto" });

self.onmessage = async (event) => {
  const { id, input, query } = event.data;
  try {
    await ready;
    if (query === "kernel") self.postMessage({ id, kernel: kernel() });
    else self.postMessage({ id, digest: cpuDigest(input) });
  } catch (err) {
    self.postMessage({ id, error: String(err) });
  }
};
