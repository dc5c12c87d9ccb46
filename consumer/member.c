#include "member.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static uint32_t fnv1a(uint32_t h, const void *data, size_t n)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x01000193u; /* the FNV prime */
	}
	return h;
}

uint32_t member_hash(const char *group, const char *topic)
{
	/* The group with its NUL, so that ("ab", "c") and ("a", "bc") differ. */
	uint32_t h = fnv1a(0x811c9dc5u /* offset basis */, group, strlen(group) + 1);

	return fnv1a(h, topic, strlen(topic));
}

bool member_instance_id(const struct conf *c, int id, char *out, size_t outlen, bool *hand_set,
			char *err, size_t errlen)
{
	const char *set = NULL;
	int n;

	for (int i = 0; i < c->kafka_nprops; i++)
		if (strcmp(c->kafka_props[i].name, "group.instance.id") == 0)
			set = c->kafka_props[i].value; /* the last wins, as in librdkafka */
	*hand_set = set != NULL;
	if (set != NULL)
		n = snprintf(out, outlen, "%s", set);
	else
		n = snprintf(out, outlen, "consumer-%d-%08" PRIx32, id,
			     member_hash(c->consumer_group, c->kafka_topic));
	if (n < 0 || (size_t)n >= outlen) {
		snprintf(err, errlen, "static member id too long (%d bytes, at most %zu)", n,
			 outlen > 0 ? outlen - 1 : 0);
		return false;
	}
	return true;
}

bool member_topic_ours(const struct conf *c, const char *topic)
{
	return topic != NULL && strcmp(topic, c->kafka_topic) == 0;
}

/* Append topic to the comma-separated list in buf unless it is there. */
static void note_topic(char *buf, size_t len, const char *topic)
{
	size_t used = strlen(buf), tl = strlen(topic);

	for (const char *p = buf; *p != '\0';) {
		const char *end = strchr(p, ',');
		size_t pl = end != NULL ? (size_t)(end - p) : strlen(p);

		if (pl == tl && strncmp(p, topic, tl) == 0)
			return;
		p += pl;
		if (*p == ',')
			p++;
	}
	snprintf(buf + used, len - used, "%s%s", used > 0 ? "," : "", topic);
}

rd_kafka_topic_partition_list_t *member_own_partitions(const struct conf *c,
						       const rd_kafka_topic_partition_list_t *parts,
						       int *foreign, char *foreign_topics, size_t len)
{
	rd_kafka_topic_partition_list_t *own = rd_kafka_topic_partition_list_new(parts->cnt);

	*foreign = 0;
	foreign_topics[0] = '\0';
	if (own == NULL)
		return NULL;
	for (int i = 0; i < parts->cnt; i++) {
		const rd_kafka_topic_partition_t *p = &parts->elems[i];

		if (member_topic_ours(c, p->topic)) {
			rd_kafka_topic_partition_list_add(own, p->topic, p->partition)->offset =
				p->offset;
		} else {
			(*foreign)++;
			note_topic(foreign_topics, len, p->topic);
		}
	}
	return own;
}
