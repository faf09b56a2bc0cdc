/* Scores root-cause folding on the labelled scenarios of
 * test/c/data/fold_scenarios.json (docs/analysis.md): pairs of groups put
 * into one issue against the pairs the labels put together. Shared by
 * test_analyze.c and bench_fold.c. */
#ifndef SELF_HEAL_TEST_FOLD_SCORE_H
#define SELF_HEAL_TEST_FOLD_SCORE_H

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "analyze.h"

#define FOLD_CORPUS "test/c/data/fold_scenarios.json"
#define FOLD_T0 1700000000000LL

typedef struct fold_score {
    long tp, fp, fn;  /* pairs folded rightly, wrongly, and missed */
    size_t scenarios; /* scored */
    char first_wrong[160];
} fold_score;

typedef enum { FOLD_OFFLINE, FOLD_MODEL_ALL_IN_ONE, FOLD_MODEL_LABELS } fold_analyzer;

/* The scenario's groups as the port receives them ("at" seconds become
 * first_seen/last_seen in Unix ms). New reference. */
static json_t *fold_groups(json_t *sc)
{
    json_t *out = json_array();
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(sc, "groups"), i, g)
    {
        json_t *c = json_deep_copy(g);
        long long at = (long long)(json_number_value(json_object_get(g, "at")) * 1000);
        json_object_del(c, "at");
        json_object_set_new(c, "first_seen", json_integer(FOLD_T0 + at));
        json_object_set_new(c, "last_seen", json_integer(FOLD_T0 + at + 1000));
        json_object_set_new(c, "count", json_integer(3));
        json_array_append_new(out, c);
    }
    return out;
}

/* Index of the issue holding id in issues (arrays of ids under key, or
 * plain arrays when key is NULL); -1 when none. */
static int fold_owner(json_t *issues, const char *key, const char *id)
{
    size_t i, k;
    json_t *is, *v;
    json_array_foreach(issues, i, is)
    {
        json_array_foreach(key ? json_object_get(is, key) : is, k, v)
        {
            if (strcmp(json_string_value(v), id) == 0)
                return (int)i;
        }
    }
    return -1;
}

/* A stand-in model's answer: every group in one issue, or the labels. */
static json_t *fold_model_reply(json_t *groups, json_t *labels, int all_in_one)
{
    json_t *issues = json_array();
    size_t i;
    json_t *v;
    if (all_in_one) {
        json_t *ids = json_array();
        json_array_foreach(groups, i, v) json_array_append(ids, json_object_get(v, "id"));
        json_array_append_new(issues, json_pack("{s:s, s:s, s:o, s:s, s:[], s:f}", "root_cause",
                                                "one cause", "severity", "high", "group_ids", ids,
                                                "suggested_fix", "", "files_likely_involved",
                                                "confidence", 0.9));
    } else
        json_array_foreach(labels, i, v) json_array_append_new(
            issues, json_pack("{s:s, s:s, s:O, s:s, s:[], s:f}", "root_cause", "labelled",
                              "severity", "high", "group_ids", v, "suggested_fix", "",
                              "files_likely_involved", "confidence", 0.9));
    return json_pack("{s:o}", "issues", issues);
}

static json_t *fold_run(fold_analyzer how, json_t *groups, json_t *labels, long long window)
{
    if (how == FOLD_OFFLINE)
        return analyze_offline(groups, window);
    json_t *reply = fold_model_reply(groups, labels, how == FOLD_MODEL_ALL_IN_ONE);
    char why[256];
    json_t *issues = analyze_validate(reply, groups, why, sizeof(why));
    json_decref(reply);
    if (issues != NULL && analyze_require_evidence(issues, groups, window, NULL) == NULL) {
        json_decref(issues);
        issues = NULL;
    }
    return issues;
}

/* Scores every scenario of the corpus (with held_out_only, those marked
 * "held_out": written after the rules and scored once before any change);
 * returns -1 when it cannot be read. */
static int fold_score_corpus(fold_score *s, fold_analyzer how, int held_out_only)
{
    memset(s, 0, sizeof(*s));
    json_error_t e;
    json_t *corpus = json_load_file(FOLD_CORPUS, 0, &e);
    if (!json_is_array(corpus)) {
        fprintf(stderr, "%s: %s\n", FOLD_CORPUS, e.text);
        json_decref(corpus);
        return -1;
    }
    size_t n;
    json_t *sc;
    json_array_foreach(corpus, n, sc)
    {
        if (held_out_only && !json_is_true(json_object_get(sc, "held_out")))
            continue;
        json_t *groups = fold_groups(sc), *labels = json_object_get(sc, "issues");
        json_t *issues =
            fold_run(how, groups, labels, json_integer_value(json_object_get(sc, "window_ms")));
        size_t ng = json_array_size(groups);
        for (size_t i = 0; issues != NULL && i < ng; i++)
            for (size_t j = i + 1; j < ng; j++) {
                const char *a = json_string_value(json_object_get(json_array_get(groups, i), "id"));
                const char *b = json_string_value(json_object_get(json_array_get(groups, j), "id"));
                int got = fold_owner(issues, "group_ids", a) == fold_owner(issues, "group_ids", b);
                int want = fold_owner(labels, NULL, a) == fold_owner(labels, NULL, b);
                s->tp += got && want;
                s->fp += got && !want;
                s->fn += !got && want;
                if (got != want && s->first_wrong[0] == '\0')
                    snprintf(s->first_wrong, sizeof(s->first_wrong), "%s: %s and %s %s",
                             json_string_value(json_object_get(sc, "name")), a, b,
                             got ? "folded" : "apart");
            }
        s->scenarios += issues != NULL;
        json_decref(issues);
        json_decref(groups);
    }
    json_decref(corpus);
    return 0;
}

static double fold_precision(const fold_score *s)
{
    return s->tp + s->fp == 0 ? 1.0 : (double)s->tp / (double)(s->tp + s->fp);
}

static double fold_recall(const fold_score *s)
{
    return s->tp + s->fn == 0 ? 1.0 : (double)s->tp / (double)(s->tp + s->fn);
}

#endif
