//! libnftables, loaded at run time: the nft JSON API in-process, without a process per
//! transaction (fork and exec of `nft` cost a launch about 2.5 ms). Loaded with `dlopen`
//! so no binary links it: a host without `libnftables.so.1` (or with an incompatible one)
//! gets `None` from [`run_json`] and the caller runs the `nft` program instead, which
//! speaks the same JSON.
//!
//! The library is used through five functions of its stable C API (`libnftables(3)`):
//! `nft_ctx_new`, `nft_ctx_output_set_flags`, `nft_ctx_buffer_error`,
//! `nft_ctx_get_error_buffer`, `nft_run_cmd_from_buffer`, `nft_ctx_free`, and one call at a
//! time (a process-wide lock): a context per call, so no state is kept between calls.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// `NFT_CTX_OUTPUT_JSON`: with it, `nft_run_cmd_from_buffer` reads JSON.
const OUTPUT_JSON: c_uint = 1 << 4;
const LIBRARY: &CStr = c"libnftables.so.1";

struct Lib {
    ctx_new: unsafe extern "C" fn(c_uint) -> *mut c_void,
    ctx_free: unsafe extern "C" fn(*mut c_void),
    output_set_flags: unsafe extern "C" fn(*mut c_void, c_uint),
    buffer_error: unsafe extern "C" fn(*mut c_void) -> c_int,
    get_error_buffer: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    run_cmd_from_buffer: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
}

static LIB: OnceLock<Option<Lib>> = OnceLock::new();
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn load() -> Option<Lib> {
    // SAFETY: dlopen with a constant, NUL-terminated name; the handle is never closed, so
    // the symbols below stay valid for the process's life.
    let h = unsafe { libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return None;
    }
    let sym = |name: &CStr| {
        // SAFETY: `h` is a live handle and `name` NUL-terminated.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    // SAFETY: each pointer is the named function of libnftables' C API, whose prototypes
    // (libnftables(3), stable since nftables 0.9) are the types transmuted to.
    unsafe {
        Some(Lib {
            ctx_new: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_uint) -> *mut c_void>(
                sym(c"nft_ctx_new")?,
            ),
            ctx_free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(sym(
                c"nft_ctx_free",
            )?),
            output_set_flags: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void, c_uint),
            >(sym(c"nft_ctx_output_set_flags")?),
            buffer_error: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> c_int,
            >(sym(c"nft_ctx_buffer_error")?),
            get_error_buffer: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void) -> *const c_char,
            >(sym(c"nft_ctx_get_error_buffer")?),
            run_cmd_from_buffer: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
            >(sym(c"nft_run_cmd_from_buffer")?),
        })
    }
}

/// Runs one nft JSON transaction in-process. `None`: libnftables is not available (run
/// `nft -j -f -` instead); `Some(Err(message))`: nft refused it (nothing of it applied).
pub fn run_json(input: &str) -> Option<Result<(), String>> {
    run_json_keep(input).map(|(r, _context)| r)
}

/// Loads the library now (about 1 ms), so a later [`run_json`] does not pay it: for a
/// caller about to take a lock others wait for.
pub fn preload() {
    let _ = LIB.get_or_init(load);
}

/// A libnftables context after its transaction, freed (its netlink socket closed) when
/// dropped. Closing the socket after a transaction that removed rules waits for the
/// kernel to free them, an RCU grace period (6-20 ms measured); keeping the context lets a
/// caller wait that out after it released what others wait for.
pub struct Context(*mut c_void);

impl Drop for Context {
    fn drop(&mut self) {
        let Some(lib) = LIB.get().and_then(Option::as_ref) else {
            return;
        };
        if self.0.is_null() {
            return;
        }
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the context came from `ctx_new` of this library, is owned by this value
        // alone and freed once, under the lock.
        unsafe { (lib.ctx_free)(self.0) }
    }
}

/// [`run_json`], keeping the context: dropping it is the last step.
pub fn run_json_keep(input: &str) -> Option<(Result<(), String>, Context)> {
    let lib = LIB.get_or_init(load).as_ref()?;
    let Ok(cmd) = CString::new(input) else {
        return Some((
            Err("the transaction contains a NUL byte".into()),
            Context(std::ptr::null_mut()),
        ));
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: a fresh context (0: the default flags) used by this call alone, under the
    // lock, and freed by the returned `Context`; `cmd` outlives the call; the error buffer
    // is read (copied) before the context can be freed.
    unsafe {
        let ctx = (lib.ctx_new)(0);
        if ctx.is_null() {
            return Some((
                Err("libnftables: no context".into()),
                Context(std::ptr::null_mut()),
            ));
        }
        (lib.output_set_flags)(ctx, OUTPUT_JSON);
        (lib.buffer_error)(ctx);
        let rc = (lib.run_cmd_from_buffer)(ctx, cmd.as_ptr());
        let err = (lib.get_error_buffer)(ctx);
        let msg = if err.is_null() {
            String::new()
        } else {
            CStr::from_ptr(err)
                .to_string_lossy()
                .trim()
                .replace('\n', "; ")
        };
        Some((if rc == 0 { Ok(()) } else { Err(msg) }, Context(ctx)))
    }
}
