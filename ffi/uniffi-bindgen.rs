//! `uniffi-bindgen`: generates the Kotlin, Swift and Python bindings from the built
//! library (`ffi/generate.sh` runs it).

fn main() {
    uniffi::uniffi_bindgen_main()
}
