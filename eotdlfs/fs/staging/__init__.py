"""The writable staging area: `MNT/staging/{datasets,models}/NAME/`, a copy-on-write overlay
flushed as a new version."""
