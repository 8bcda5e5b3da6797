-- demoapp schema. Idempotent (IF NOT EXISTS everywhere) and run under an advisory lock at every start.

CREATE TABLE IF NOT EXISTS users (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- Denormalised from `follows` in the same transaction: one-row reads of a user's followers.
    followers       bigint[] NOT NULL DEFAULT '{}',
    follower_count  integer NOT NULL DEFAULT 0,
    following_count integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The normalised truth: one row per edge.
CREATE TABLE IF NOT EXISTS follows (
    follower_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    followee_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id),
    CHECK (follower_id <> followee_id)
);
CREATE INDEX IF NOT EXISTS follows_followee_idx ON follows (followee_id, follower_id);

-- users.followers holds the first 1000 followers only (repo.LIST_LIMIT): trim rows written before the bound.
UPDATE users SET followers = followers[1:1000] WHERE cardinality(followers) > 1000;

-- Results of writes by Idempotency-Key, written in the same transaction as the write itself.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text NOT NULL,
    status       integer NOT NULL,
    body         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);
