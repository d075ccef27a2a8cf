/* tslint:disable */
/* eslint-disable */

/** Options of `LightClient.create`. */
export interface LightOptions {
    /** Node base URLs, e.g. `http://127.0.0.1:8645`. */
    nodes: string[];
    /** `devnet` (default) or `mainnet`. */
    chain?: "devnet" | "mainnet";
    /** Genesis time of a devnet started with `--genesis-time-ms`; omitted on a devnet: adopted from the first node. */
    genesisTimeMs?: number;
    /** `sampled` (default: last k + FlyClient sample) or `full` (every header). */
    mode?: "sampled" | "full";
    /** Sampled mode: newest headers checked fully (1..=100, default 100). */
    last?: number;
    /** Sampled mode: security level in bits (1..=128, default 50); the draw count follows from it (PROTOCOL.md §16). */
    securityBits?: number;
    /** WebGPU: `true` always first, `false` never, `"auto"` (default) raced against the CPU on the first three headers (digests compared), the faster kept: a software adapter loses to the simd128 kernel. */
    gpu?: boolean | "auto";
    /** URL of `tpow_light_worker.js`: CPU passes then run in a Web Worker. */
    workerUrl?: string;
    /** Keep verified state in IndexedDB and resume from it (default true). */
    persist?: boolean;
    /** A header every accepted chain must contain. */
    checkpointHeight?: number;
    checkpointId?: string;
}
export type Backend = "web-gpu" | "cpu-worker" | "cpu-wasm" | "cpu-native";
export interface TipSummary { height: number; id: string; total_work: string; timestamp_ms: number; header: string; }
export interface VerifiedRecord { height: number; id: string; backend: Backend; ms: number; check: "linked" | "sampled" | "detached"; node: string; }
export interface NodeStatus {
    url: string;
    state: "unknown" | "ok" | "behind" | "unreachable" | "invalid";
    /** Why, for `unreachable` and `invalid` (a node flagged for serving invalid data). */
    detail?: string;
    claimed_height?: number;
    claimed_work?: string;
}
export interface Progress { phase: "tips" | "headers" | "flyclient" | "verify" | "done"; node: string; done: number; total: number; height?: number; }
export interface SyncReport { tip: TipSummary; passes: number; bytes: number; ms: number; nodes: NodeStatus[]; }
export interface Stats { passes: number; bytes: number; headers_checked: number; requests: number; }
/** What `sync`, `verifyHeader` and `create` reject with: an `Error` with these fields. */
export interface LightClientError extends Error {
    /** `invalid-data` (the node lied or sent garbage), `network`, `no-valid-chain`, `decode`, `invalid-header`, `engine`, `config`, `busy`. */
    kind: string;
    /** The node blamed, if any. */
    node?: string;
}



/**
 * The tpow light client (see pkg/README.md).
 */
export class LightClient {
    private constructor();
    free(): void;
    [Symbol.dispose](): void;
    /**
     * Creates a client. Rejects with a `LightClientError` on bad options.
     */
    static create(options: LightOptions): Promise<LightClient>;
    /**
     * One forward pass of (`prevId`, `template`, `nonce`) on `backend`
     * (`web-gpu`, `cpu-worker`, `cpu-wasm`): resolves with `{digest, ms}`. For
     * benchmarks and for checking that the engines agree.
     */
    digestOn(backend: string, prev_id: string, template: string, nonce: string): Promise<{digest: string, ms: number}>;
    /**
     * Node statuses (a node that served invalid data has `state: "invalid"`).
     */
    nodes(): NodeStatus[];
    /**
     * Recently verified headers, newest last, with backend and milliseconds.
     */
    recent(): VerifiedRecord[];
    /**
     * Counters since creation.
     */
    stats(): Stats;
    /**
     * Calls `callback(tip)` for every new verified best tip, following the nodes'
     * WebSockets. Returns an id for `unsubscribe`.
     */
    subscribe(callback: (tip: TipSummary) => void): number;
    /**
     * Verifies the best chain the nodes serve; `onProgress` (optional) gets a `Progress`
     * after every request and forward pass. Resolves with a `SyncReport`.
     */
    sync(onProgress?: Function | null): Promise<SyncReport>;
    /**
     * The best verified tip.
     */
    tip(): TipSummary;
    /**
     * Stops a subscription; the last one closes the WebSockets.
     */
    unsubscribe(id: number): void;
    /**
     * Verifies one 192-byte header (parent-linked if the client holds the parent,
     * else the detached checks) and its forward pass.
     */
    verifyHeader(bytes: Uint8Array | number[]): Promise<VerifiedRecord>;
    /**
     * The WebGPU adapter in use, if any.
     */
    readonly adapter: string | undefined;
    /**
     * The engine passes go to first: `web-gpu`, `cpu-worker` or `cpu-wasm`.
     */
    readonly backend: Backend;
    /**
     * Why WebGPU is not used, if it was tried.
     */
    readonly gpuError: string | undefined;
}

/**
 * The CPU forward pass of an encoded pass request (the worker's entry point):
 * returns the 32-byte output digest. Throws on a malformed request.
 */
export function cpuDigest(input: Uint8Array | number[]): Uint8Array;

/**
 * The forward-pass kernel of the loaded WebAssembly build: `simd128`,
 * `relaxed-simd` or `portable` (what `init` picked; call it after `init`).
 */
export function kernel(): "simd128" | "relaxed-simd" | "portable";

/**
 * The output digest of one forward pass on the CPU, for the test vectors:
 * `chain` is `devnet` or `mainnet`, the rest as in the vector files.
 */
export function vectorDigest(chain: string, prev_id: string, template: string, nonce: string): string;

export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

export interface InitOutput {
    readonly memory: WebAssembly.Memory;
    readonly __wbg_lightclient_free: (a: number, b: number) => void;
    readonly cpuDigest: (a: number, b: number) => [number, number, number, number];
    readonly kernel: () => [number, number];
    readonly lightclient_adapter: (a: number) => [number, number];
    readonly lightclient_backend: (a: number) => any;
    readonly lightclient_create: (a: any) => any;
    readonly lightclient_digestOn: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number, i: number) => any;
    readonly lightclient_gpuError: (a: number) => [number, number];
    readonly lightclient_nodes: (a: number) => any;
    readonly lightclient_recent: (a: number) => any;
    readonly lightclient_stats: (a: number) => any;
    readonly lightclient_subscribe: (a: number, b: any) => number;
    readonly lightclient_sync: (a: number, b: number) => any;
    readonly lightclient_tip: (a: number) => any;
    readonly lightclient_unsubscribe: (a: number, b: number) => void;
    readonly lightclient_verifyHeader: (a: number, b: number, c: number) => any;
    readonly vectorDigest: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number) => [number, number, number, number];
    readonly wasm_bindgen__convert__closures_____invoke__h22a0035bee6af1a4: (a: number, b: number, c: any, d: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__h4ef0b9c444202ea2: (a: number, b: number, c: any) => [number, number];
    readonly wasm_bindgen__convert__closures_____invoke__h4ef0b9c444202ea2_24: (a: number, b: number, c: any) => [number, number];
    readonly wasm_bindgen__convert__closures_____invoke__h4ef0b9c444202ea2_25: (a: number, b: number, c: any) => [number, number];
    readonly wasm_bindgen__convert__closures_____invoke__haca3d69bf42e0d14: (a: number, b: number, c: any) => [number, number];
    readonly wasm_bindgen__convert__closures_____invoke__h00224f60934d13ed: (a: number, b: number, c: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__h00224f60934d13ed_19: (a: number, b: number, c: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__h00224f60934d13ed_23: (a: number, b: number, c: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__h5503fb4bfb4569eb: (a: number, b: number, c: any) => void;
    readonly wasm_bindgen__convert__closures_____invoke__h5503fb4bfb4569eb_22: (a: number, b: number, c: any) => void;
    readonly __wbindgen_malloc: (a: number, b: number) => number;
    readonly __wbindgen_realloc: (a: number, b: number, c: number, d: number) => number;
    readonly __wbindgen_free: (a: number, b: number, c: number) => void;
    readonly __wbindgen_exn_store: (a: number) => void;
    readonly __externref_table_alloc: () => number;
    readonly __wbindgen_externrefs: WebAssembly.Table;
    readonly __wbindgen_destroy_closure: (a: number, b: number) => void;
    readonly __externref_table_dealloc: (a: number) => void;
    readonly __wbindgen_start: () => void;
}

export type SyncInitInput = BufferSource | WebAssembly.Module;

/**
 * Instantiates the given `module`, which can either be bytes or
 * a precompiled `WebAssembly.Module`.
 *
 * @param {{ module: SyncInitInput }} module - Passing `SyncInitInput` directly is deprecated.
 *
 * @returns {InitOutput}
 */
export function initSync(module: { module: SyncInitInput } | SyncInitInput): InitOutput;

/**
 * If `module_or_path` is {RequestInfo} or {URL}, makes a request and
 * for everything else, calls `WebAssembly.instantiate` directly.
 *
 * @param {{ module_or_path: InitInput | Promise<InitInput> }} module_or_path - Passing `InitInput` directly is deprecated.
 *
 * @returns {Promise<InitOutput>}
 */
export default function __wbg_init (module_or_path?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>): Promise<InitOutput>;
