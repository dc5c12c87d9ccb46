#ifndef OUTBOXD_SQL_FILES_H
#define OUTBOXD_SQL_FILES_H

/* The migrations in sql/, compiled in by scripts/embed-sql. A name that
 * contains "_sink" belongs to the consumer's database ([consumer] conninfo). */
struct sql_file {
	const char *name;
	const char *text;
};

extern const struct sql_file sql_files[];
extern const int sql_nfiles;

#endif
