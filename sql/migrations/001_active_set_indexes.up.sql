-- queue-doctor migration 001: partial indexes over the active set.
-- Each index covers only the rows of one status (or, for the claim order, the two active ones),
-- so it stays as small as the live queue however much finished history the table keeps.
-- Every step runs on its own, outside a transaction (CREATE INDEX CONCURRENTLY does not block
-- workers); an INVALID index of the same name left by an interrupted run is dropped and rebuilt.

-- step: create-index queued_ready
CREATE INDEX {{concurrently}} IF NOT EXISTS {{index.queued_ready}}
    ON {{jobs}} ({{col.priority}}, {{col.scheduledAt}})
 WHERE {{col.status}} = {{lit.queued}}

-- step: create-index running_lease
CREATE INDEX {{concurrently}} IF NOT EXISTS {{index.running_lease}}
    ON {{jobs}} ({{col.leaseExpiresAt}})
 WHERE {{col.status}} = {{lit.running}}

-- step: create-index failed_recent
CREATE INDEX {{concurrently}} IF NOT EXISTS {{index.failed_recent}}
    ON {{jobs}} ({{col.updatedAt}})
 WHERE {{col.status}} = {{lit.failed}}

-- step: create-index claim_order
-- The balanced claim's one ordered candidate set: priority, then the moment the job became ready
-- (scheduled_at for a queued job, lease expiry for a running one). The expression must stay
-- identical to the ORDER BY of migration 002, or the planner will not use it.
CREATE INDEX {{concurrently}} IF NOT EXISTS {{index.claim_order}}
    ON {{jobs}} ({{col.priority}}, (CASE WHEN {{col.status}} = {{lit.queued}} THEN {{col.scheduledAt}} ELSE {{col.leaseExpiresAt}} END))
 WHERE {{col.status}} IN ({{lit.queued}}, {{lit.running}})
