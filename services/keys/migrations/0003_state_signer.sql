-- Which keyring entry signed every key state last (shared/state_mac.py). At start the key
-- service re-publishes every key's state, signed, when its signing entry is not the one named
-- here (the first start after the upgrade that brought MACs, and after each rotation), then
-- records it: states on the compacted topic and in Redis made before then do not verify.
CREATE TABLE state_signer (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key_id    text NOT NULL,
    keys      bigint NOT NULL,
    signed_at timestamptz NOT NULL
);
