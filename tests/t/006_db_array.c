/* db_array: array parameters in PostgreSQL's text form, any text quoted
 * and escaped (the integration tests send them to a real server). */
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "tap.h"

int main(void)
{
	struct db_array a = { 0 };
	const char *t;
	int commas = 0;

	t = db_array_text(&a);
	is_str(t, "{}", "no element: {}");
	db_array_add(&a, "plain");
	db_array_add(&a, NULL);
	db_array_add(&a, "");
	db_array_add(&a, "q\"uo\\te, {x}");
	is_str(db_array_text(&a), "{\"plain\",NULL,\"\",\"q\\\"uo\\\\te, {x}\"}",
	       "text, NULL, empty and a quote, backslash, comma and braces, escaped");
	is_int(a.n, 4, "4 elements");

	db_array_clear(&a);
	db_array_add_int(&a, -9223372036854775807LL - 1);
	db_array_add_int(&a, 0);
	db_array_add_int(&a, 42);
	is_str(db_array_text(&a), "{-9223372036854775808,0,42}", "integers, unquoted");

	db_array_clear(&a);
	for (int i = 0; i < 5000; i++)
		db_array_add(&a, "0123456789abcdef0123456789abcdef");
	t = db_array_text(&a);
	for (const char *p = t; p != NULL && *p != '\0'; p++)
		commas += *p == ',';
	ok(t != NULL && strlen(t) == 2 + 5000 * 34 + 4999, "5000 elements grow the buffer");
	is_int(commas, 4999, "... with 4999 separators");
	ok(!a.failed, "nothing failed");
	db_array_free(&a);
	ok(a.buf == NULL && a.n == 0, "freed and zeroed");
	return done_testing();
}
