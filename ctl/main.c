#include <stdio.h>
#include <string.h>
#include "sql_files.h"
int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--help") == 0) { printf("usage: outboxctl %d\n", sql_nfiles); return 0; }
	return 1;
}
