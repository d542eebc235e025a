//! The proxy-wasm floor: an HTTP filter that lets every request through. Built twice
//! (`make wasm-floor`): `floor-noop.wasm` only returns `Continue`; `floor-headers.wasm`
//! also reads the request header map once, as MeshGuard does for every request. What
//! Envoy spends per request on these two is the part of MeshGuard's cost that no change
//! inside MeshGuard can remove.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream;

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "headers")]
        read_headers();
        Action::Continue
    }
}

#[cfg(feature = "headers")]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: proxy_wasm::types::MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> proxy_wasm::types::Status;
}

/// The request header map, read once through the host call MeshGuard uses: Envoy
/// serialises the map into a buffer it allocates in the module (one call back into
/// `proxy_on_memory_allocate`). The buffer is only freed: decoding it is MeshGuard's cost.
#[cfg(feature = "headers")]
fn read_headers() {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to a buffer of `size` bytes it allocated through
    // the SDK's `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes).
    unsafe {
        let status = proxy_get_header_map_pairs(
            proxy_wasm::types::MapType::HttpRequestHeaders,
            &mut data,
            &mut size,
        );
        if matches!(status, proxy_wasm::types::Status::Ok) && !data.is_null() {
            let buf = Vec::from_raw_parts(data, size, size);
            std::hint::black_box(&buf);
        }
    }
}
