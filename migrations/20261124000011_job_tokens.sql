-- A token vibe can use for exactly one thing: posting its own job's preview URL while the job
-- runs (POST /v1/jobs/{id}/preview-url), without holding one of the API's tokens. A new one is
-- drawn at every claim.
ALTER TABLE jobs ADD COLUMN job_token uuid;
