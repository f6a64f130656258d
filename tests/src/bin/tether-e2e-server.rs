//! The end-to-end tests' server process: `tether serve`'s own code on the database and
//! address the harness gives in the environment (`tests::Server` starts it, and kills it
//! with SIGKILL to test a crash). A binary of its own, so that no test file has to carry
//! a hidden test that is really a server.

fn main() {
    if !tests::server_child() {
        eprintln!(
            "tether-e2e-server: started by the end-to-end tests (tests::Server), which set TETHER_E2E_DB and TETHER_E2E_ADDR"
        );
        std::process::exit(2);
    }
}
