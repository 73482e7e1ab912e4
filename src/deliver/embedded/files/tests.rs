use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

#[test]
fn folders_and_files_are_private_and_tightened() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a").join("outbox");
    prepare_folder(&dir).unwrap();
    assert_eq!(mode(&dir), FOLDER_MODE);
    let file = dir.join("outbox.redb");
    prepare_file(&file).unwrap();
    assert_eq!(mode(&file), FILE_MODE);

    std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
    prepare_folder(&dir).unwrap();
    prepare_file(&file).unwrap();
    assert_eq!((mode(&dir), mode(&file)), (FOLDER_MODE, FILE_MODE));

    // Tighter than ours is left alone.
    std::fs::set_permissions(&file, Permissions::from_mode(0o400)).unwrap();
    prepare_file(&file).unwrap();
    assert_eq!(mode(&file), 0o400);
}

#[test]
fn the_probe_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    disk_takes_writes(root.path()).unwrap();
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    assert!(disk_takes_writes(&root.path().join("missing")).is_err());
}
