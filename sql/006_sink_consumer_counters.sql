-- More of each consumer's counters in sink.consumers (outboxctl status).
--
-- foreign_messages: messages of a topic the consumer is not configured
-- for. Such a message is never applied, dead-lettered or parked, and its
-- offset is never committed. foreign_partitions: partitions of such a
-- topic that the group assigned to it (it does not take them). Above 0,
-- either means that the consumer group, or a hand-set
-- kafka.group.instance.id, is shared with another topic's consumers (see
-- consumer/member.h).
-- reconnects: how often the consumer re-established its sink session
-- after losing it (each one rewinds to the committed Kafka offsets when
-- commit_interval_ms > 0). A loss noticed between messages (the counters
-- flush) is counted here and not as a retry.
ALTER TABLE sink.consumers ADD COLUMN IF NOT EXISTS foreign_messages bigint NOT NULL DEFAULT 0;
ALTER TABLE sink.consumers ADD COLUMN IF NOT EXISTS foreign_partitions bigint NOT NULL DEFAULT 0;
ALTER TABLE sink.consumers ADD COLUMN IF NOT EXISTS reconnects bigint NOT NULL DEFAULT 0;
