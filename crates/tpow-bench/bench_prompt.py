"""The chat benchmarks' shared workload (the llama.cpp scripts next to this file).

Keep in sync with PROMPT and the decode length in crates/tpow-bench/src/chat.rs.
"""

PROMPT = (
    "You are reviewing a design document for a small peer-to-peer network in which every node "
    "mines blocks with a neural network forward pass and also answers chat requests with a small language model. "
    "The document says that mining must yield the processor whenever a chat request is waiting, that each node keeps "
    "a bounded queue of requests and refuses new ones when the queue is full, and that a request may be cancelled at "
    "any time by closing the connection. It also says that the model is loaded once at start-up from a file whose "
    "size and hash are pinned, that nothing is downloaded while the node runs, and that tokens are streamed to the "
    "client as soon as they are generated. Summarise the three most important risks of this design, explain how you "
    "would measure whether chat requests really get the processor quickly enough, and suggest one simple test for "
    "each risk. Answer in a short numbered list."
)
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
DECODE_TOKENS = 128
