#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--help") == 0) { printf("usage: supervisor\n"); return 0; }
	fprintf(stderr, "supervisor: not yet available\n");
	return 1;
}
