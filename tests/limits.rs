//! Input limits that are properties of `Store` rather than of the
//! backend contract: the log capacity and the resource size.

use watchstore::{
    Error, Id, Resource, Store, StoreOptions, Tenancy, Type, MAX_LOG_CAPACITY, MAX_RESOURCE_BYTES,
};

use prost::Message;

fn id(name: &str) -> Id {
    Id {
        uid: "u".into(),
        name: name.into(),
        r#type: Some(Type {
            group: "demo".into(),
            group_version: "v1".into(),
            kind: "Blob".into(),
        }),
        tenancy: Some(Tenancy {
            partition: "default".into(),
            namespace: "default".into(),
        }),
    }
}

/// Builds a resource whose encoding, with an empty version, is exactly
/// `size` bytes.
fn resource_of_size(size: usize) -> Resource {
    let mut resource = Resource {
        id: Some(id("big")),
        ..Default::default()
    };
    let base = resource.encoded_len();
    resource.metadata.insert("k".into(), String::new());
    let mut value_len = size - base - (resource.encoded_len() - base);
    loop {
        resource.metadata.insert("k".into(), "x".repeat(value_len));
        let len = resource.encoded_len();
        if len == size {
            return resource;
        }
        // The value's length prefix can change width, so adjust and retry.
        value_len = value_len + size - len;
    }
}

#[test]
fn log_capacity_over_maximum_rejected() {
    for capacity in [MAX_LOG_CAPACITY * 2, 1 << 40, 1 << 63] {
        let result = Store::with_options(StoreOptions::default().log_capacity(capacity));
        match result {
            Err(Error::InvalidArgument { field, reason }) => {
                assert_eq!(field, "log_capacity");
                assert!(reason.contains(&capacity.to_string()), "{reason}");
            }
            other => panic!("capacity {capacity}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[test]
fn log_capacity_not_power_of_two_rejected() {
    for capacity in [0, 3, 1000] {
        let result = Store::with_options(StoreOptions::default().log_capacity(capacity));
        assert!(
            matches!(
                result,
                Err(Error::InvalidArgument {
                    field: "log_capacity",
                    ..
                })
            ),
            "capacity {capacity}: {result:?}"
        );
    }
}

#[test]
fn stored_copy_at_size_limit_writes_back() {
    let store = Store::new();
    let resource = resource_of_size(MAX_RESOURCE_BYTES);
    assert_eq!(resource.encoded_len(), MAX_RESOURCE_BYTES);

    let stored = store
        .write_cas(&resource)
        .expect("a resource at the limit is accepted");
    assert!(
        stored.encoded_len() > MAX_RESOURCE_BYTES,
        "the version adds bytes"
    );
    let rewritten = store
        .write_cas(&stored)
        .expect("the stored copy can be written back");
    assert_eq!(rewritten.version, "2");
    store
        .restore(vec![Resource::clone(&rewritten)])
        .expect("a stored copy can be restored");
}

#[test]
fn resource_over_size_limit_rejected() {
    let store = Store::new();
    let resource = resource_of_size(MAX_RESOURCE_BYTES + 1);
    match store.write_cas(&resource) {
        Err(Error::InvalidArgument { field, reason }) => {
            assert_eq!(field, "resource");
            assert!(
                reason.contains(&(MAX_RESOURCE_BYTES + 1).to_string()),
                "{reason}"
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(store.current_index(), 0);
}
