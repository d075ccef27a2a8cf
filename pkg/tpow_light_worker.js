// Runs CPU forward passes off the page's thread. LightClient starts it as a
// module worker when given `workerUrl`; it instantiates its own copy of the wasm
// and answers {id, input} (an encoded pass request) with {id, digest} or {id, error}.
import init, { cpuDigest } from "./tpow_light.js";

const ready = init();

self.onmessage = async (event) => {
  const { id, input } = event.data;
  try {
    await ready;
    self.postMessage({ id, digest: cpuDigest(input) });
  } catch (err) {
    self.postMessage({ id, error: String(err) });
  }
};
