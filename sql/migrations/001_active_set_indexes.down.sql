-- queue-doctor migration 001, reverted: drops the indexes it created, newest first, each on its
-- own and outside a transaction so workers keep writing meanwhile.

-- step: drop-index claim_order
DROP INDEX {{concurrently}} IF EXISTS {{schema}}.{{index.claim_order}}

-- step: drop-index failed_recent
DROP INDEX {{concurrently}} IF EXISTS {{schema}}.{{index.failed_recent}}

-- step: drop-index running_lease
DROP INDEX {{concurrently}} IF EXISTS {{schema}}.{{index.running_lease}}

-- step: drop-index queued_ready
DROP INDEX {{concurrently}} IF EXISTS {{schema}}.{{index.queued_ready}}
