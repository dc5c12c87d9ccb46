-- The Kafka cluster the outbox publishes to (outbox side, schema public).
--
-- sent_at means "the broker of THIS cluster acknowledged the event": a relay
-- whose bootstrap address leads to another cluster (a repointed name, another
-- stack on a freed port) would otherwise mark events sent that the consumers
-- of the real cluster never see. The first relay to publish records the
-- broker's cluster id here; every relay compares the broker's id with this
-- row before each batch and again before marking it sent, and publishes
-- nothing while they differ. The row changes only by
-- `outboxctl accept-cluster` (an operator's decision).
CREATE TABLE IF NOT EXISTS public.outboxd_kafka_cluster (
    one          boolean     PRIMARY KEY DEFAULT true CHECK (one),  -- at most one row
    cluster_id   text        NOT NULL CHECK (cluster_id <> ''),
    accepted_at  timestamptz NOT NULL DEFAULT now(),
    accepted_by  text        NOT NULL
);

-- Each relay's view, for outboxctl status: the cluster id its broker
-- reported at the last check, and while it is blocked on another cluster
-- than the recorded one, why (NULL when it is not blocked).
ALTER TABLE public.outboxd_relays
    ADD COLUMN IF NOT EXISTS cluster_id       text,
    ADD COLUMN IF NOT EXISTS cluster_mismatch text;
