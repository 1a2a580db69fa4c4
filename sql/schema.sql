-- Reference schema of the report app's queue, as queue-doctor's defaults name it.
-- Deliberately without queue-doctor's partial indexes: the app ships only these,
-- and `queue-doctor inspect` reports the missing ones (check `indexes`).
CREATE TABLE report_runs (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  status            text NOT NULL DEFAULT 'QUEUED',
  final_report_json jsonb,
  created_at        timestamptz NOT NULL DEFAULT now(),
  completed_at      timestamptz
);

CREATE TABLE jobs (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  type             text NOT NULL,
  status           text NOT NULL DEFAULT 'QUEUED',
  priority         integer NOT NULL DEFAULT 100,
  run_id           uuid REFERENCES report_runs (id),
  payload          jsonb NOT NULL DEFAULT '{}',
  attempts         integer NOT NULL DEFAULT 0,
  max_attempts     integer NOT NULL DEFAULT 3,
  scheduled_at     timestamptz NOT NULL DEFAULT now(),
  locked_by        text,
  locked_at        timestamptz,
  lease_expires_at timestamptz,
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX jobs_run_id_idx ON jobs (run_id);
