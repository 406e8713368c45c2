//! Resources, keys, filters and a random number generator shared by the
//! benchmarks and by the peer stores.

use std::sync::Arc;

use watchstore::{Id, Resource, Tenancy, Type};

/// Group of every benchmark resource.
pub const GROUP: &str = "bench";
/// Group version of every benchmark resource.
pub const GROUP_VERSION: &str = "v1";
/// Kind of every benchmark resource.
pub const KIND: &str = "item";
/// Partition and namespace of every benchmark resource.
pub const TENANCY_NAME: &str = "default";
/// Size of the opaque payload in `Resource::data`, in bytes.
pub const PAYLOAD_BYTES: usize = 64;

/// Returns the type shared by all benchmark resources.
pub fn resource_type() -> Type {
    Type {
        group: GROUP.to_owned(),
        group_version: GROUP_VERSION.to_owned(),
        kind: KIND.to_owned(),
    }
}

/// Returns the tenancy shared by all benchmark resources.
pub fn tenancy() -> Tenancy {
    Tenancy {
        partition: TENANCY_NAME.to_owned(),
        namespace: TENANCY_NAME.to_owned(),
    }
}

/// Returns the id of resource number `n`, with a uid so rewrites pass the uid check.
pub fn id(n: usize) -> Id {
    Id {
        uid: format!("uid-{n}"),
        name: format!("item-{n:08}"),
        r#type: Some(resource_type()),
        tenancy: Some(tenancy()),
    }
}

/// Builds resource number `n` with an empty version, ready for a create.
///
/// The resource is small: an id, one metadata entry and a 64-byte payload.
pub fn resource(n: usize) -> Resource {
    Resource {
        id: Some(id(n)),
        owner: None,
        version: String::new(),
        generation: "1".to_owned(),
        metadata: [("team".to_owned(), "bench".to_owned())]
            .into_iter()
            .collect(),
        status: Default::default(),
        data: Some(prost_types::Any {
            type_url: "type.googleapis.com/bench.Payload".to_owned(),
            value: vec![0xab; PAYLOAD_BYTES],
        }),
    }
}

/// Store key: group, kind, partition, namespace and name joined by NUL bytes.
///
/// Group version and uid are not part of the key, as in watchstore. One
/// string keeps comparisons byte-wise, like Consul's go-memdb index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// Builds the key of `id`, or `None` when the id has no type.
    pub fn of(id: &Id) -> Option<Key> {
        let ty = id.r#type.as_ref()?;
        let (partition, namespace) = match &id.tenancy {
            Some(tenancy) => (tenancy.partition.as_str(), tenancy.namespace.as_str()),
            None => ("", ""),
        };
        let mut key = String::with_capacity(
            ty.group.len() + ty.kind.len() + partition.len() + namespace.len() + id.name.len() + 4,
        );
        for part in [ty.group.as_str(), ty.kind.as_str(), partition, namespace] {
            key.push_str(part);
            key.push('\0');
        }
        key.push_str(&id.name);
        Some(Key(key))
    }

    /// Builds the smallest key of the given group and kind: every key of that
    /// type sorts at or after it and starts with it.
    pub fn type_prefix(group: &str, kind: &str) -> Key {
        Key(format!("{group}\0{kind}\0"))
    }

    /// Reports whether this key starts with `prefix`.
    pub fn starts_with(&self, prefix: &Key) -> bool {
        self.0.starts_with(&prefix.0)
    }
}

/// Typed failures of the peer stores, mirroring the watchstore error kinds
/// that the benchmarks can hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// Nothing is stored under the key, or the uid differs.
    NotFound,
    /// The expected version does not match the stored one.
    CasFailure {
        expected: String,
        stored: Option<String>,
    },
    /// The uid of the write differs from the stored uid.
    WrongUid,
    /// The group version differs from the stored one.
    GroupVersionMismatch,
    /// The resource has no id or no type.
    InvalidArgument { field: &'static str },
}

/// Extracts the id and key of `resource`, the first step of every peer write.
pub fn id_and_key(resource: &Resource) -> Result<(&Id, Key), PeerError> {
    let id = resource
        .id
        .as_ref()
        .ok_or(PeerError::InvalidArgument { field: "id" })?;
    let key = Key::of(id).ok_or(PeerError::InvalidArgument { field: "id.type" })?;
    Ok((id, key))
}

/// Checks a CAS write against the stored copy with watchstore's rules: create
/// only for an empty version, same uid, same version.
pub fn check_cas(
    resource: &Resource,
    id: &Id,
    stored: Option<&Arc<Resource>>,
) -> Result<(), PeerError> {
    match stored {
        None if !resource.version.is_empty() => Err(PeerError::CasFailure {
            expected: resource.version.clone(),
            stored: None,
        }),
        None => Ok(()),
        Some(stored) => {
            let stored_uid = stored.id.as_ref().map(|id| id.uid.as_str());
            if stored_uid != Some(id.uid.as_str()) || id.uid.is_empty() {
                return Err(PeerError::WrongUid);
            }
            if stored.version != resource.version || resource.version.is_empty() {
                return Err(PeerError::CasFailure {
                    expected: resource.version.clone(),
                    stored: Some(stored.version.clone()),
                });
            }
            Ok(())
        }
    }
}

/// Applies watchstore's read rules (uid, then group version) to a stored copy.
pub fn check_read(id: &Id, stored: Option<&Arc<Resource>>) -> Result<Arc<Resource>, PeerError> {
    let stored = stored.ok_or(PeerError::NotFound)?;
    let stored_id = stored.id.as_ref().ok_or(PeerError::NotFound)?;
    if !id.uid.is_empty() && id.uid != stored_id.uid {
        return Err(PeerError::NotFound);
    }
    let requested_version = id.r#type.as_ref().map(|ty| ty.group_version.as_str());
    let stored_version = stored_id
        .r#type
        .as_ref()
        .map(|ty| ty.group_version.as_str());
    if requested_version != stored_version {
        return Err(PeerError::GroupVersionMismatch);
    }
    Ok(Arc::clone(stored))
}

/// Copies `resource` with its version set to the decimal commit `index`, the
/// stored form of a write in watchstore and in the peers.
pub fn stored_copy(resource: &Resource, index: u64) -> Arc<Resource> {
    let mut stored = resource.clone();
    stored.version = index.to_string();
    Arc::new(stored)
}

/// Watch event of the peer stores.
#[derive(Clone, Debug)]
pub enum PeerEvent {
    /// A resource was created or replaced at `index`, or is part of a snapshot
    /// taken at `index`.
    Upsert { index: u64, resource: Arc<Resource> },
    /// The snapshot taken at `index` is complete.
    EndOfSnapshot { index: u64 },
}

/// Watch filter with watchstore's matching rules: group and kind equal, each
/// tenancy field equal or `"*"`, name starting with the prefix.
#[derive(Clone, Debug)]
pub struct Filter {
    pub group: String,
    pub kind: String,
    pub partition: String,
    pub namespace: String,
    pub name_prefix: String,
}

impl Filter {
    /// Returns a filter that matches every benchmark resource.
    pub fn all_items() -> Filter {
        Filter {
            group: GROUP.to_owned(),
            kind: KIND.to_owned(),
            partition: "*".to_owned(),
            namespace: "*".to_owned(),
            name_prefix: String::new(),
        }
    }

    /// Returns the key prefix that every matching key starts with.
    pub fn key_prefix(&self) -> Key {
        Key::type_prefix(&self.group, &self.kind)
    }

    /// Reports whether `resource` matches this filter.
    pub fn matches(&self, resource: &Resource) -> bool {
        let Some(id) = resource.id.as_ref() else {
            return false;
        };
        let Some(ty) = id.r#type.as_ref() else {
            return false;
        };
        let (partition, namespace) = match &id.tenancy {
            Some(tenancy) => (tenancy.partition.as_str(), tenancy.namespace.as_str()),
            None => ("", ""),
        };
        ty.group == self.group
            && ty.kind == self.kind
            && (self.partition == "*" || self.partition == partition)
            && (self.namespace == "*" || self.namespace == namespace)
            && id.name.starts_with(&self.name_prefix)
    }
}

/// Xorshift64* generator: fast, seedable and good enough to pick keys.
pub struct Rng(u64);

impl Rng {
    /// Creates a generator; a zero seed is replaced because xorshift would stay at zero.
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Returns a number in `0..bound`; `bound` must be positive.
    pub fn below(&mut self, bound: usize) -> usize {
        // The multiply-shift maps 64 random bits onto the range with a bias
        // below 2^-32 for the sizes used here.
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }
}
