#include "offsets.h"

#include <stdlib.h>
#include <string.h>

struct offsets {
	char *topic;
	int64_t *next; /* by partition; -1: nothing recorded */
	int32_t n;
	bool pending;
};

struct offsets *offsets_new(const char *topic)
{
	struct offsets *o = calloc(1, sizeof *o);

	if (o == NULL)
		return NULL;
	o->topic = strdup(topic);
	if (o->topic == NULL) {
		free(o);
		return NULL;
	}
	return o;
}

void offsets_free(struct offsets *o)
{
	if (o == NULL)
		return;
	free(o->next);
	free(o->topic);
	free(o);
}

void offsets_done(struct offsets *o, int32_t partition, int64_t offset)
{
	if (partition < 0)
		return;
	if (partition >= o->n) {
		int32_t n = partition + 1 > o->n * 2 ? partition + 1 : o->n * 2;
		int64_t *p = realloc(o->next, (size_t)n * sizeof *p);

		if (p == NULL)
			return; /* not recorded: committed later, or redelivered */
		for (int32_t i = o->n; i < n; i++)
			p[i] = -1;
		o->next = p;
		o->n = n;
	}
	o->next[partition] = offset + 1;
	o->pending = true;
}

bool offsets_pending(const struct offsets *o)
{
	return o->pending;
}

rd_kafka_topic_partition_list_t *offsets_list(const struct offsets *o)
{
	rd_kafka_topic_partition_list_t *l = NULL;

	for (int32_t i = 0; i < o->n; i++) {
		if (o->next[i] < 0)
			continue;
		if (l == NULL)
			l = rd_kafka_topic_partition_list_new(o->n);
		rd_kafka_topic_partition_list_add(l, o->topic, i)->offset = o->next[i];
	}
	return l;
}

void offsets_committed(struct offsets *o)
{
	o->pending = false;
}

void offsets_uncommitted(struct offsets *o)
{
	for (int32_t i = 0; i < o->n; i++)
		if (o->next[i] >= 0)
			o->pending = true;
}

void offsets_forget(struct offsets *o, const rd_kafka_topic_partition_list_t *parts)
{
	for (int i = 0; i < parts->cnt; i++) {
		const rd_kafka_topic_partition_t *p = &parts->elems[i];

		if (strcmp(p->topic, o->topic) == 0 && p->partition >= 0 && p->partition < o->n)
			o->next[p->partition] = -1;
	}
}

void offsets_forget_all(struct offsets *o)
{
	for (int32_t i = 0; i < o->n; i++)
		o->next[i] = -1;
	o->pending = false;
}
