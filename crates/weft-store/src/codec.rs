//! How resources are laid out in the database: the key is `Kind/namespace/name`, the value the
//! JSON of the resource's [`Object`] (the same shape the API serves).

use weft_api::resource::{Key, Object, Resource};

/// The database key of a resource. Names and namespaces are DNS labels, so `/` cannot be in them.
pub(crate) fn storage_key(key: &Key) -> String {
    format!("{}/{}/{}", key.kind, key.namespace, key.name)
}

pub(crate) fn encode(resource: &Resource) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&resource.to_object())
}

/// Reads a stored value back. Any problem is an error message for the quarantine list: the value
/// is not JSON of an object, the object is not valid, it is stored under another key, or its
/// version is not a store revision.
pub(crate) fn decode(key: &str, value: &[u8]) -> Result<(Resource, u64), String> {
    let object: Object = serde_json::from_slice(value).map_err(|e| format!("not a resource: {e}"))?;
    let resource = Resource::try_from(object).map_err(|e| e.to_string())?;
    let actual = storage_key(&resource.key());
    if actual != key {
        return Err(format!("holds {actual}, not the resource of its key"));
    }
    let version =
        version_of(&resource).ok_or_else(|| "metadata.resourceVersion is missing or not a revision".to_string())?;
    Ok((resource, version))
}

/// The revision at which the store last wrote this resource.
pub(crate) fn version_of(resource: &Resource) -> Option<u64> {
    resource.metadata().resource_version.as_deref()?.parse().ok()
}

/// Checks a resource as it would be read back (the store keeps only what it can reload), and
/// returns it in that form.
pub(crate) fn normalize(resource: Resource) -> Result<Resource, weft_api::ConfigError> {
    Resource::try_from(resource.to_object())
}
