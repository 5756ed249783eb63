//! The echo service of the example binaries: every application connection
//! gets its bytes back, on a thread of its own, until the client closes its
//! side.

use std::io;
use std::thread;

use running_process::{BackendServer, ServerError};

/// Serves connections until the server shuts down (`Ok`), or until accepting
/// fails otherwise (that error).
pub fn serve_until_shutdown(server: &BackendServer) -> Result<(), ServerError> {
    loop {
        match server.accept() {
            Ok(conn) => {
                let spawned = thread::Builder::new()
                    .name("echo".to_owned())
                    .spawn(move || {
                        let (mut reader, mut writer) = (&*conn, &*conn);
                        if let Err(e) = io::copy(&mut reader, &mut writer) {
                            log::debug!("echo connection ended: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    log::warn!("dropping connection: cannot start a thread: {e}");
                }
            }
            Err(ServerError::ShuttingDown) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
