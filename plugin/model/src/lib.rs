//! The model: what the network needs of Kubernetes objects, and nothing else.
//!
//! `contiv-ksr` converts the API's objects into these types and writes them to the store
//! as versioned JSON documents ([`encode`] / [`decode`]) under the keys of DESIGN.md
//! section 8 ([`Resource::key`]). Everything downstream (agents, the simulation) reads
//! only these: never raw Kubernetes JSON.
//!
//! A conversion refuses what the network could not act on correctly (a port out of range,
//! a selector operator it does not know, a CIDR that does not parse) with a
//! [`ModelError`] naming the object and the field; KSR logs it, counts it, and goes on
//! with the other objects.

mod convert;
mod selector;
mod types;

pub use selector::{LabelSelector, Requirement, SelectorOp};
pub use types::*;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of the documents this code writes. A reader refuses newer ones rather
/// than misread them.
pub const MODEL_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("{kind} {object}: missing {field}")]
    Missing {
        kind: &'static str,
        object: String,
        field: &'static str,
    },
    #[error("{kind} {object}: {field}: {reason}")]
    Invalid {
        kind: &'static str,
        object: String,
        field: String,
        reason: String,
    },
    #[error("document is not valid JSON for {kind}: {reason}")]
    Decode { kind: &'static str, reason: String },
    #[error("document for {kind} has version {found}; this build reads up to {supported}")]
    Version {
        kind: &'static str,
        found: u32,
        supported: u32,
    },
}

/// A type the store holds.
pub trait Resource: Serialize + DeserializeOwned {
    /// The kind's segment in store keys (`pod`, `service`, ...).
    const KIND: &'static str;
    /// Namespaced kinds have keys `k8s/<kind>/<namespace>/<name>`, others `k8s/<kind>/<name>`.
    fn namespace(&self) -> Option<&str>;
    fn name(&self) -> &str;

    /// The key under the store prefix (which the caller adds).
    fn key(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("k8s/{}/{}/{}", Self::KIND, ns, self.name()),
            None => format!("k8s/{}/{}", Self::KIND, self.name()),
        }
    }

    /// The prefix of every key of this kind.
    fn kind_prefix() -> String {
        format!("k8s/{}/", Self::KIND)
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u32,
    #[serde(rename = "obj")]
    object: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    v: u32,
    #[serde(rename = "obj")]
    object: T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

/// The document stored for `object`.
pub fn encode<T: Resource>(object: &T) -> Vec<u8> {
    // Serializing these plain types cannot fail (no maps with non-string keys).
    serde_json::to_vec(&EnvelopeOut {
        v: MODEL_VERSION,
        object,
    })
    .unwrap_or_default()
}

/// Reads a stored document.
pub fn decode<T: Resource>(bytes: &[u8]) -> Result<T, ModelError> {
    let v: VersionOnly = serde_json::from_slice(bytes).map_err(|e| ModelError::Decode {
        kind: T::KIND,
        reason: e.to_string(),
    })?;
    if v.v > MODEL_VERSION {
        return Err(ModelError::Version {
            kind: T::KIND,
            found: v.v,
            supported: MODEL_VERSION,
        });
    }
    let env: EnvelopeIn<T> = serde_json::from_slice(bytes).map_err(|e| ModelError::Decode {
        kind: T::KIND,
        reason: e.to_string(),
    })?;
    debug_assert!(env.v <= MODEL_VERSION);
    Ok(env.object)
}
