importScripts("./miner_worker.js");
wasm_bindgen(new URLSearchParams(location.search).get('kernel') !== 'portable' && WebAssembly.validate(new Uint8Array([0,97,115,109,1,0,0,0,1,5,1,96,0,1,123,3,2,1,0,10,15,1,13,0,65,0,253,15,65,0,253,15,253,186,1,11]))
  ? './miner_worker_simd_bg.wasm' : './miner_worker_bg.wasm');
