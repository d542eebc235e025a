//! Envoy's shared data as [`SharedData`]: the one store behind the token cache's
//! Envoy-wide tier and the fetched documents' coordination.

use crate::shared::SharedData;
use proxy_wasm::hostcalls;

/// Envoy's shared data. Host errors read as "absent" / "not written": coordination
/// degrades to extra fetches or verifications, never to a VM abort.
pub(crate) struct EnvoyShared;

impl SharedData for EnvoyShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}
