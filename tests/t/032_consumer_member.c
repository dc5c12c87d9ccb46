/* The consumer's static member id (derived from group and topic, or the
 * hand-set kafka.group.instance.id as is) and its topic guard (what is ours
 * of a message or an assignment). No services. Links the module by
 * including it (the Makefile's unit rule links common/ only). */
#include <stdio.h>
#include <string.h>

#include "member.c"
#include "tap.h"

static void add_prop(struct conf *c, const char *name, const char *value)
{
	struct conf_kafka_prop *p = &c->kafka_props[c->kafka_nprops++];

	snprintf(p->name, sizeof p->name, "%s", name);
	snprintf(p->value, sizeof p->value, "%s", value);
	p->line = c->kafka_nprops;
}

int main(void)
{
	struct conf c, d;
	char id[MEMBER_ID_MAX], id2[MEMBER_ID_MAX], small[12], err[256], topics[64];
	bool hand = true;
	rd_kafka_topic_partition_list_t *in, *own;
	int foreign = -1;

	/* FNV-1a 32: the published values, then over group NUL topic. */
	is_int(fnv1a(0x811c9dc5u, "", 0), 0x811c9dc5u, "FNV-1a of nothing is the offset basis");
	is_int(fnv1a(0x811c9dc5u, "a", 1), 0xe40c292cu, "FNV-1a of \"a\" is e40c292c");
	is_int(member_hash("outboxd", "orders.events"), 0x235667f0u,
	       "hash over \"outboxd\\0orders.events\"");
	ok(member_hash("ab", "c") != member_hash("a", "bc"),
	   "the NUL between group and topic keeps (ab, c) and (a, bc) apart");

	conf_defaults(&c);
	snprintf(c.consumer_group, sizeof c.consumer_group, "outboxd");
	snprintf(c.kafka_topic, sizeof c.kafka_topic, "orders.events");
	ok(member_instance_id(&c, 0, id, sizeof id, &hand, err, sizeof err), "derived id");
	is_str(id, "consumer-0-235667f0", "consumer-<id>-<8 hex of the hash of group and topic>");
	ok(!hand, "and it is not hand-set");
	ok(member_instance_id(&c, 17, id, sizeof id, &hand, err, sizeof err), "worker 17");
	is_str(id, "consumer-17-235667f0", "the worker id is in it");

	d = c;
	snprintf(d.kafka_topic, sizeof d.kafka_topic, "payments.events");
	ok(member_instance_id(&d, 0, id2, sizeof id2, &hand, err, sizeof err) &&
		   member_instance_id(&c, 0, id, sizeof id, &hand, err, sizeof err),
	   "ids for two topics");
	ok(strcmp(id, id2) != 0 && strncmp(id2, "consumer-0-", 11) == 0,
	   "a topic change with the same group id gives another static member");
	d = c;
	snprintf(d.consumer_group, sizeof d.consumer_group, "other");
	ok(member_instance_id(&d, 0, id2, sizeof id2, &hand, err, sizeof err) && strcmp(id, id2) != 0,
	   "so does a group change with the same topic");

	ok(!member_instance_id(&c, 0, small, sizeof small, &hand, err, sizeof err),
	   "an id that does not fit is an error");
	ok(strstr(err, "too long") != NULL, "which says so");

	d = c;
	add_prop(&d, "fetch.wait.max.ms", "50");
	add_prop(&d, "group.instance.id", "first");
	add_prop(&d, "group.instance.id", "my-service-7");
	ok(member_instance_id(&d, 3, id, sizeof id, &hand, err, sizeof err), "hand-set id");
	is_str(id, "my-service-7", "kafka.group.instance.id is honoured as is (the last line wins)");
	ok(hand, "and reported as hand-set");

	ok(member_topic_ours(&c, "orders.events"), "our topic is ours");
	ok(!member_topic_ours(&c, "orders.events.dlq"), "our dead-letter topic is not");
	ok(!member_topic_ours(&c, "orders.event"), "a prefix is not");
	ok(!member_topic_ours(&c, "t.other"), "another topic is not");
	ok(!member_topic_ours(&c, NULL), "no topic is not");

	in = rd_kafka_topic_partition_list_new(6);
	rd_kafka_topic_partition_list_add(in, "t.other", 0);
	rd_kafka_topic_partition_list_add(in, "orders.events", 3)->offset = 42;
	rd_kafka_topic_partition_list_add(in, "t.other", 1);
	rd_kafka_topic_partition_list_add(in, "t.third", 5);
	rd_kafka_topic_partition_list_add(in, "orders.events", 7);
	own = member_own_partitions(&c, in, &foreign, topics, sizeof topics);
	ok(own != NULL, "own partitions of a mixed assignment");
	is_int(own->cnt, 2, "two are ours");
	ok(strcmp(own->elems[0].topic, "orders.events") == 0 && own->elems[0].partition == 3 &&
		   own->elems[0].offset == 42 && own->elems[1].partition == 7,
	   "partitions 3 (its offset kept) and 7 of our topic");
	is_int(foreign, 3, "three are foreign");
	is_str(topics, "t.other,t.third", "their topics, each once");
	rd_kafka_topic_partition_list_destroy(own);
	rd_kafka_topic_partition_list_destroy(in);

	in = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(in, "a-very-long-topic-name-of-another-service", 0);
	rd_kafka_topic_partition_list_add(in, "b-very-long-topic-name-of-another-service", 0);
	own = member_own_partitions(&c, in, &foreign, topics, 20);
	ok(own != NULL && own->cnt == 0 && foreign == 2, "nothing of ours: an empty list, 2 foreign");
	ok(strlen(topics) == 19, "the topic list is cut to fit");
	rd_kafka_topic_partition_list_destroy(own);
	rd_kafka_topic_partition_list_destroy(in);
	return done_testing();
}
