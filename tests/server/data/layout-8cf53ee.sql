-- A repository database made by eotdlfs at 8cf53ee (before SQLAlchemy), version_sizes dropped as in older
-- layouts. Blobs: a.txt 'alpha\n', d/b.bin 'bravo'*100 then 'charlie', draft.txt 'delta'.
-- API key of old-user: eotdlfs_HESRfyUwLoCyArN7tj9Erq_F9L35ieEAJuwIOfNIzxk
BEGIN TRANSACTION;
CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO "api_keys" VALUES('60e57dcb934d4c2cf5cad9d4e0859e2c8b1673916719affddebc4ff57442c600','old-user','2026-11-30T16:39:54.843519+00:00');
CREATE TABLE file_versions (
    record_id TEXT NOT NULL REFERENCES records(id),
    path TEXT NOT NULL,
    file_version INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (record_id, path, file_version)
);
INSERT INTO "file_versions" VALUES('569dce42079c771780ad872d','a.txt',1,'d046cd9b7ffb7661e449683313d41f6fc33e3130',6,'2026-11-30T16:39:54.783131+00:00');
INSERT INTO "file_versions" VALUES('569dce42079c771780ad872d','d/b.bin',1,'0143b99593e1ea9ba22fcf74bd64fa6566d99b8f',500,'2026-11-30T16:39:54.794307+00:00');
INSERT INTO "file_versions" VALUES('569dce42079c771780ad872d','d/b.bin',2,'d8cd10b920dcbdb5163ca0185e402357bc27c265',7,'2026-11-30T16:39:54.818315+00:00');
INSERT INTO "file_versions" VALUES('569dce42079c771780ad872d','draft.txt',1,'736fcab46d3c183000b547caa2f1f0abcdcd1c87',5,'2026-11-30T16:39:54.838318+00:00');
CREATE TABLE records (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    uid TEXT NOT NULL,
    name TEXT NOT NULL,
    authors TEXT NOT NULL,          -- JSON list
    source TEXT NOT NULL,
    license TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    files_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (kind, name)
);
INSERT INTO "records" VALUES('569dce42079c771780ad872d','datasets','old-user','old-layout','["a"]','http://x','MIT','made by the code of 8cf53ee','43eef132577837a41f87ed9a','2026-11-30T16:39:54.774776+00:00','2026-11-30T16:39:54.838367+00:00');
INSERT INTO "records" VALUES('cc0de8ccc84f0ea63feb4d66','models','old-user','old-model','["a"]','http://x','MIT','','3e688828b70d4f8cc220ad67','2026-11-30T16:39:54.842693+00:00','2026-11-30T16:39:54.842693+00:00');
CREATE TABLE uploads (
    upload_id TEXT PRIMARY KEY,
    record_id TEXT NOT NULL,
    uid TEXT NOT NULL,
    path TEXT NOT NULL,
    file_version INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE version_files (
    record_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    file_version INTEGER NOT NULL,
    PRIMARY KEY (record_id, version, path)
);
INSERT INTO "version_files" VALUES('569dce42079c771780ad872d',1,'a.txt',1);
INSERT INTO "version_files" VALUES('569dce42079c771780ad872d',1,'d/b.bin',1);
INSERT INTO "version_files" VALUES('569dce42079c771780ad872d',2,'a.txt',1);
INSERT INTO "version_files" VALUES('569dce42079c771780ad872d',2,'d/b.bin',2);
INSERT INTO "version_files" VALUES('569dce42079c771780ad872d',3,'draft.txt',1);
CREATE TABLE versions (
    record_id TEXT NOT NULL REFERENCES records(id),
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    draft INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (record_id, version)
);
INSERT INTO "versions" VALUES('569dce42079c771780ad872d',1,'2026-11-30T16:39:54.778377+00:00',0);
INSERT INTO "versions" VALUES('569dce42079c771780ad872d',2,'2026-11-30T16:39:54.806309+00:00',0);
INSERT INTO "versions" VALUES('569dce42079c771780ad872d',3,'2026-11-30T16:39:54.830321+00:00',1);
COMMIT;
