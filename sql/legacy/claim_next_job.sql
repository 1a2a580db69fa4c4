-- The report app's claim function as it was during the incident (root cause 1).
-- Phase 1 reclaims an expired RUNNING lease; phase 2 claims a QUEUED job only when
-- phase 1 found nothing. While leases keep expiring, phase 2 never runs.
-- Note also: phase 1 never checks max_attempts, so exhausted jobs are handed out forever.
CREATE OR REPLACE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300)
RETURNS SETOF jobs
LANGUAGE plpgsql
AS $$
DECLARE
  v_job jobs;
BEGIN
  -- Phase 1: reclaim stuck jobs whose lease expired
  SELECT * INTO v_job
    FROM jobs
   WHERE status = 'RUNNING'
     AND lease_expires_at < now()
   ORDER BY lease_expires_at
   LIMIT 1
   FOR UPDATE SKIP LOCKED;

  IF FOUND THEN
    UPDATE jobs
       SET locked_by = p_worker_id,
           locked_at = now(),
           lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           attempts = attempts + 1,
           updated_at = now()
     WHERE id = v_job.id
    RETURNING * INTO v_job;
    RETURN NEXT v_job;
    RETURN;
  END IF;

  -- Phase 2: claim the best due QUEUED job
  RETURN QUERY
  UPDATE jobs
     SET status = 'RUNNING',
         locked_by = p_worker_id,
         locked_at = now(),
         lease_expires_at = now() + make_interval(secs => p_lease_seconds),
         attempts = attempts + 1,
         updated_at = now()
   WHERE id = (
     SELECT id
       FROM jobs
      WHERE status = 'QUEUED'
        AND scheduled_at <= now()
      ORDER BY priority, scheduled_at
      LIMIT 1
      FOR UPDATE SKIP LOCKED
   )
  RETURNING *;
END;
$$;
