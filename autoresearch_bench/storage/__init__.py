"""Where the harness's records live on disk (a package, one job a module; import the module you need):

    schema        a run's record (RunRecord) and the results files' columns: results.tsv, results.jsonl
    appends       rows appended to the results files, all or none, atomic against concurrent writers and
                  crashes; the ledger that tells a run's own appends from tampering
    fingerprints  what makes scores comparable: the machine fingerprint and its readable id
    baselines     stored baselines, per task × fingerprint: baselines/<task>/<fingerprint id>.json

A file's content digest and the check that a path can be written before a session relies on it are
files.py's (file_digest, check_writable).
"""
