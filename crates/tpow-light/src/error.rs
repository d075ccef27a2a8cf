//! Typed errors. Everything a node sends is untrusted: any defect in it becomes a
//! [`NodeFault`] wrapped in [`LightError::Node`] with the node's URL, never a panic
//! and never an accepted header.

use tpow_core::chain::HeaderError;
use tpow_core::header::DecodeError;
use tpow_core::mmr::MmrError;
use tpow_core::U256;

/// What was wrong with data a node served. Each variant proves the node served
/// invalid data (as opposed to [`LightError::Network`], which may be bad luck).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeFault {
    /// A response was larger than the client accepts for that request.
    #[error("response of {got} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes received (or announced).
        got: usize,
        /// The cap for this request.
        limit: usize,
    },
    /// JSON that does not parse, a missing field, bad hex, a bad number.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// A count outside what was asked for or what the protocol allows.
    #[error("absurd count: {0}")]
    Count(String),
    /// Header bytes that do not decode (truncated, wrong version, bad bits).
    #[error("header at position {index} does not decode: {error}")]
    Decode {
        /// Position in the response.
        index: usize,
        /// Why.
        error: DecodeError,
    },
    /// A header the node served fails a consensus check.
    #[error("header {height} is invalid: {error}")]
    Header {
        /// Its height.
        height: u64,
        /// The failed check.
        error: HeaderError,
    },
    /// A header is not what the node said (height, id, parent).
    #[error("header {height}: {what}")]
    Mismatch {
        /// Height concerned.
        height: u64,
        /// What differs.
        what: String,
    },
    /// An MMR proof does not decode or does not verify.
    #[error("MMR proof for height {height} is invalid: {error}")]
    Proof {
        /// Proven height.
        height: u64,
        /// Why.
        error: MmrError,
    },
    /// The FlyClient sample is not the one the tip id prescribes.
    #[error("FlyClient sample is wrong: {0}")]
    Sample(String),
    /// The verified chain has a different total work than the node claimed.
    #[error("claimed total work {claimed} but the served chain has {verified}")]
    WorkMismatch {
        /// What the node announced.
        claimed: U256,
        /// What the verified headers add up to.
        verified: U256,
    },
    /// The served chain does not start at the configured genesis or checkpoint.
    #[error("chain does not contain the configured {0}")]
    WrongChain(String),
}

/// Why the platform could not fetch a response from a node. The variant decides
/// what the client makes of it; the text is context for people only. None of these
/// proves the node lied (unlike a [`NodeFault`]): the node is marked unreachable
/// and asked again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No connection: refused, DNS, TLS, offline, or blocked by the browser (CORS).
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// The node answered with a status other than 2xx.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The node's `{"error": …}` text or the start of its body.
        message: String,
    },
    /// The response started but its body could not be read.
    #[error("reading the response: {0}")]
    Body(String),
    /// The node's best chain moved between announcing its tip and answering a
    /// request about that tip (an honest reorganisation looks the same): the
    /// answer is not used, and the next sync asks again.
    #[error("its chain moved at height {height} between its tip and the sample; retrying later")]
    TipMoved {
        /// The tip height asked about.
        height: u64,
    },
}

impl FetchError {
    /// Whether the node refused this request with a status (it is up).
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Why a forward pass, or the randomness a sync draws, was not available. Never a
/// verdict on a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine is not there (no WebGPU adapter, no worker).
    #[error("{0} is not available")]
    Unavailable(String),
    /// The engine ran and failed (a GPU error, a worker that went away, a model
    /// that could not be derived).
    #[error("{0}")]
    Failed(String),
    /// No unpredictable randomness (`crypto.getRandomValues`): a sampled sync cannot
    /// draw its seed, so it does not start.
    #[error("randomness: {0}")]
    Randomness(String),
}

/// Why a light-client operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightError {
    /// `node` served invalid data; it is flagged and its chain is not accepted.
    #[error("node {node} served invalid data: {fault}")]
    Node {
        /// The node's base URL.
        node: String,
        /// What was wrong.
        fault: NodeFault,
    },
    /// `node` could not be reached or answered with an HTTP error.
    #[error("node {node} unreachable: {error}")]
    Network {
        /// The node's base URL.
        node: String,
        /// What went wrong.
        error: FetchError,
    },
    /// No configured node gave a chain that verifies.
    #[error("no node served a chain that verifies ({0})")]
    NoValidChain(String),
    /// Bytes handed to [`crate::Client::verify_header`] do not decode.
    #[error("not a header: {0}")]
    Decode(#[from] DecodeError),
    /// A header handed to [`crate::Client::verify_header`] fails a check.
    #[error("invalid header: {0}")]
    Header(#[from] HeaderError),
    /// The forward-pass engine failed (not a verdict on the header).
    #[error("forward-pass engine failed: {0}")]
    Engine(#[from] EngineError),
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The chain parameters are unusable.
    #[error("bad chain parameters: {0}")]
    Params(#[from] tpow_core::ParamsError),
    /// Another sync or follow step is running.
    #[error("the client is busy with another sync")]
    Busy,
}

impl LightError {
    /// The node this error blames, if it blames one.
    pub fn node(&self) -> Option<&str> {
        match self {
            LightError::Node { node, .. } | LightError::Network { node, .. } => Some(node),
            _ => None,
        }
    }

    /// Short machine-readable kind (`node`, `network`, `no-valid-chain`, ...), the
    /// `kind` field of the JS error.
    pub fn kind(&self) -> &'static str {
        match self {
            LightError::Node { .. } => "invalid-data",
            LightError::Network { .. } => "network",
            LightError::NoValidChain(_) => "no-valid-chain",
            LightError::Decode(_) => "decode",
            LightError::Header(_) => "invalid-header",
            LightError::Engine(_) => "engine",
            LightError::Config(_) | LightError::Params(_) => "config",
            LightError::Busy => "busy",
        }
    }
}

/// Attaches a node URL to a fault.
pub(crate) fn fault(node: &str, fault: NodeFault) -> LightError {
    LightError::Node { node: node.to_string(), fault }
}
