/* Passwords never reach the log: conninfo masking. */
#include "log.h"
#include "tap.h"

int main(void)
{
	char out[256];

	log_mask_conninfo("host=db user=u password=secret dbname=x", out, sizeof out);
	is_str(out, "host=db user=u password=**** dbname=x", "keyword form masked");
	log_mask_conninfo("host=db password = 'se cr\\'et' port=5", out, sizeof out);
	is_str(out, "host=db password=**** port=5", "quoted value with spaces masked");
	log_mask_conninfo("postgresql://alice:secret@db:5432/x?sslmode=off", out, sizeof out);
	is_str(out, "postgresql://alice:****@db:5432/x?sslmode=off", "URI userinfo masked");
	log_mask_conninfo("postgresql://db/x?password=secret&user=a", out, sizeof out);
	is_str(out, "postgresql://db/x?password=****&user=a", "URI query password masked");
	log_mask_conninfo("host=db port=5432", out, sizeof out);
	is_str(out, "host=db port=5432", "nothing to mask is unchanged");
	log_mask_conninfo("password=secretsecretsecret", out, 8);
	ok(strstr(out, "secret") == NULL, "truncated output still hides the password");
	return done_testing();
}
