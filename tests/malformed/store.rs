use super::*;

// ---------------------------------------------------------------------------
// The .servicedef store

pub(crate) fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

pub(crate) fn store_file(dir: &Path, content: &[u8]) -> PathBuf {
    let path = dir.join("echo.servicedef");
    fs::write(&path, content).unwrap();
    path
}

#[test]
fn store_reader_maps_decode_errors() {
    let dir = private_dir();
    let garbage = store_file(dir.path(), b"\xff\xff\xff");
    match ServiceDefinition::load_file(&garbage) {
        Err(StoreError::Decode { path, source }) => {
            assert_eq!(path, garbage);
            malformed(source, "ServiceDefinition", "invalid varint");
        }
        other => panic!("{other:?}"),
    }
    let truncated = store_file(dir.path(), &service_definition().to_bytes()[..12]);
    assert!(matches!(
        ServiceDefinition::load_file(&truncated),
        Err(StoreError::Decode {
            source: DecodeError::Malformed { .. },
            ..
        })
    ));
    let bad_isolation = [sd_fields().concat(), uint_field(3, 5)].concat();
    assert!(matches!(
        ServiceDefinition::load("echo", Some(dir.path())),
        Err(StoreError::Decode { .. })
    ));
    store_file(dir.path(), &bad_isolation);
    assert!(matches!(
        ServiceDefinition::load("echo", Some(dir.path())),
        Err(StoreError::Decode {
            source: DecodeError::Malformed { .. },
            ..
        })
    ));
    // A decoded but invalid definition is a validation error, the same as
    // from a constructor.
    let mut relative = sd_fields();
    relative[1] = len_field(2, b"echo");
    store_file(dir.path(), &relative.concat());
    assert!(matches!(
        ServiceDefinition::load("echo", Some(dir.path())),
        Err(StoreError::Invalid(ValidationError::ServiceDefinition {
            field: "binary_path",
            ..
        }))
    ));
    // An empty file is a definition without a name.
    store_file(dir.path(), b"");
    assert!(matches!(
        ServiceDefinition::load("echo", Some(dir.path())),
        Err(StoreError::Invalid(ValidationError::Name {
            kind: NameKind::ServiceName,
            ..
        }))
    ));
    // A valid definition of another service.
    let mut other = service_definition();
    other.service_name = "other".into();
    store_file(dir.path(), &other.to_bytes());
    match ServiceDefinition::load("echo", Some(dir.path())) {
        Err(StoreError::StemMismatch {
            stem, service_name, ..
        }) => assert_eq!((stem.as_str(), service_name.as_str()), ("echo", "other")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn store_reader_refuses_a_4_gib_file_without_reading_it() {
    let dir = private_dir();
    let path = dir.path().join("echo.servicedef");
    let file = fs::File::create(&path).unwrap();
    // Sparse: no disk space, but the size a reader would have to allocate.
    file.set_len(4 << 30).unwrap();
    drop(file);
    let (result, _, largest) = measure(|| ServiceDefinition::load_file(&path));
    match result {
        Err(StoreError::TooLarge {
            path: p,
            length,
            limit,
        }) => {
            assert_eq!(p, path);
            assert_eq!((length, limit), (4 << 30, MAX_SERVICEDEF_BYTES));
        }
        other => panic!("{other:?}"),
    }
    assert!(largest < 64 * 1024, "allocated {largest} bytes");
    // One byte over the limit is refused the same way.
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MAX_SERVICEDEF_BYTES + 1)
        .unwrap();
    assert!(matches!(
        ServiceDefinition::load_file(&path),
        Err(StoreError::TooLarge { length, .. }) if length == MAX_SERVICEDEF_BYTES + 1
    ));
}

#[test]
fn store_reader_refuses_a_fifo_without_blocking() {
    let dir = private_dir();
    let path = dir.path().join("echo.servicedef");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // A blocking open of a FIFO waits for a writer forever; the reader must
    // refuse it as not a regular file instead. Run it on a thread so a
    // regression fails the test rather than hanging it: a writer opened
    // after the deadline releases a blocked reader.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader_path = path.clone();
    let reader = thread::spawn(move || {
        let result = ServiceDefinition::load_file(&reader_path);
        let _ = done_tx.send(());
        result
    });
    let finished = done_rx.recv_timeout(Duration::from_secs(30)).is_ok();
    if !finished {
        let _unblock = fs::File::options().write(true).open(&path);
    }
    let result = reader.join().unwrap();
    assert!(finished, "loading a FIFO blocked");
    match result {
        Err(StoreError::Fs(running_process::FsError::Io {
            operation, source, ..
        })) => {
            assert_eq!(operation, "open"); // refused once opened, before any read
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
        }
        other => panic!("{other:?}"),
    }
}
