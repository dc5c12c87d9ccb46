/* Passwords never reach a log line: conninfo is masked through libpq's own
 * parser, for key/value strings and URIs, whatever the password holds. */
#include "db.h"
#include "tap.h"

static void hidden(const char *conninfo, const char *secret, const char *desc)
{
	char out[512], err[512] = "";

	db_conninfo_masked(conninfo, out, sizeof out);
	if (!ok(strstr(out, secret) == NULL && strstr(out, "password=****") != NULL, desc))
		diag("masked: %s", out);
	if (db_conninfo_check(conninfo, err, sizeof err))
		err[0] = '\0';
	if (!ok(strstr(err, secret) == NULL, "  and its check's message hides it too"))
		diag("error: %s", err);
}

int main(void)
{
	char out[256], err[256];

	db_conninfo_masked("host=db user=u password=secret dbname=x", out, sizeof out);
	is_str(out, "user='u' password=**** dbname='x' host='db'", "key/value form masked");
	db_conninfo_masked("postgresql://alice:secret@db:5432/x?sslmode=disable", out, sizeof out);
	is_str(out, "user='alice' password=**** dbname='x' host='db' port='5432' sslmode='disable'",
	       "URI userinfo masked");
	db_conninfo_masked("host=db port=5432", out, sizeof out);
	is_str(out, "host='db' port='5432'", "nothing to mask: every setting shown");
	db_conninfo_masked("host='/run/my dir' application_name='it\\'s'", out, sizeof out);
	is_str(out, "host='/run/my dir' application_name='it\\'s'", "values are quoted and escaped");

	hidden("host=db password='x Sup3rS3cretPW' dbname=x", "Sup3rS3cretPW",
	       "a quoted password with a space");
	hidden("host=db password = 'se cr\\'et' port=5", "cr\\'et", "a quote escaped inside it");
	hidden("host=db password='back\\\\sl@sh' port=5", "sl@sh", "a backslash and an @");
	hidden("postgresql://alice:p%40ss%20w0rd@db/x", "w0rd", "URI userinfo with %-escapes");
	hidden("postgresql://db/x?password=Sup3r%20S3cret&user=a", "S3cret", "URI ?password=");
	hidden("postgresql://db/x?user=a&password=Sup3rS3cret", "Sup3rS3cret", "URI &password=");
	hidden("host=db sslpassword='Sup3r S3cret' password=x", "S3cret", "sslpassword too");

	/* Strings libpq refuses: never shown, and the error quotes none of it. */
	db_conninfo_masked("host=db password=x Sup3rS3cretPW", out, sizeof out);
	ok(strstr(out, "Sup3r") == NULL, "an unquoted password with a space: not shown");
	ok(!db_conninfo_check("host=db password=x Sup3rS3cretPW", err, sizeof err),
	   "  the check refuses it");
	ok(strstr(err, "Sup3r") == NULL && strstr(err, "missing \"=\" after \"...\"") != NULL,
	   "  and says what is wrong without the fragment");
	diag("%s", err);
	ok(!db_conninfo_check("host=db password='Sup3r S3cret", err, sizeof err) &&
	   strstr(err, "S3cret") == NULL, "an unterminated quote is refused, nothing quoted");
	ok(!db_conninfo_check("host=db frobnicate=1", err, sizeof err),
	   "an unknown keyword is refused");
	ok(db_conninfo_check("postgresql://u@db:5432/x?connect_timeout=3", err, sizeof err),
	   "a good URI passes the check");
	db_conninfo_masked("password=secretsecretsecret", out, 8);
	ok(strstr(out, "secret") == NULL && strlen(out) < 8, "truncated output still hides it");
	return done_testing();
}
