// The package's entry point. It exports everything the wasm-bindgen glue
// (tpow_light_glue.js) exports, and its `init` picks the WebAssembly build at run
// time: tpow_light_simd_bg.wasm (tpow-core's simd128 kernels, about 10x faster)
// where the engine supports WebAssembly SIMD, else tpow_light_bg.wasm (portable,
// no SIMD). Both are built from the same sources by scripts/build-pkg.sh, share
// this glue and give the same digests; `kernel()` says which one runs.
import initGlue from "./tpow_light_glue.js";

export * from "./tpow_light_glue.js";

// The smallest module that uses simd128: one function `() -> v128` whose body is
// `i32.const 0; i8x16.splat; i32.const 0; i8x16.splat; i32x4.dot_i16x8_s`.
// An engine without SIMD rejects it (`WebAssembly.validate` is false).
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 0, 253, 15, 65, 0, 253, 15,
  253, 186, 1, 11,
]);

const KERNELS = ["auto", "simd128", "portable"];

/** Whether this engine runs WebAssembly SIMD (simd128). */
export function simdSupported() {
  try {
    return typeof WebAssembly === "object" && WebAssembly.validate(SIMD_PROBE);
  } catch {
    return false;
  }
}

/**
 * The URL of the build `init` loads for `kernel`: "auto" (default: simd128 where
 * supported), "simd128" or "portable".
 */
export function wasmUrl(kernel = "auto") {
  if (!KERNELS.includes(kernel)) throw new Error(`kernel must be one of ${KERNELS.join(", ")}, got ${kernel}`);
  // Literal URLs, so that bundlers see and copy both files.
  return kernel === "simd128" || (kernel === "auto" && simdSupported())
    ? new URL("./tpow_light_simd_bg.wasm", import.meta.url)
    : new URL("./tpow_light_bg.wasm", import.meta.url);
}

/**
 * Loads the WebAssembly module; call (and await) it once before anything else.
 * `init()` picks the build; `init({ kernel: "portable" })` forces one; a
 * `module_or_path` (as in wasm-bindgen's own `init`) loads exactly that.
 */
export default function init(options) {
  if (options === undefined || options === null) return initGlue({ module_or_path: wasmUrl() });
  if (Object.getPrototypeOf(options) === Object.prototype) {
    const { kernel, module_or_path } = options;
    if (module_or_path !== undefined) return initGlue({ module_or_path });
    try {
      return initGlue({ module_or_path: wasmUrl(kernel ?? "auto") });
    } catch (e) {
      return Promise.reject(e);
    }
  }
  return initGlue(options);
}
