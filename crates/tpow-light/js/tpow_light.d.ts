/* The package's entry point (tpow_light.js): the wasm-bindgen glue's exports, and an
 * `init` that picks the WebAssembly build (simd128 where supported, else portable). */
import type { InitInput, InitOutput } from "./tpow_light_glue.js";

export * from "./tpow_light_glue.js";

/** Which WebAssembly build `init` loads: `auto` (simd128 where the engine supports it), `simd128` or `portable`. */
export type KernelChoice = "auto" | "simd128" | "portable";

/** Whether this engine runs WebAssembly SIMD (simd128): `WebAssembly.validate` of a tiny SIMD module. */
export function simdSupported(): boolean;

/** The URL of the build `init` loads for `kernel` (default `auto`). */
export function wasmUrl(kernel?: KernelChoice): URL;

/**
 * Loads the WebAssembly module; await it once before anything else. `init()` picks
 * the build, `init({ kernel: "portable" })` forces one, `module_or_path` loads exactly
 * that module. `kernel()` then says which kernel runs.
 */
export default function init(
  options?: { module_or_path?: InitInput | Promise<InitInput>; kernel?: KernelChoice } | InitInput | Promise<InitInput>,
): Promise<InitOutput>;
