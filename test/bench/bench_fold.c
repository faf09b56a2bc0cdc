/* Root-cause folding on the labelled scenarios (test/c/data/
 * fold_scenarios.json): precision and recall of the pairs of groups put
 * into one issue, for the offline analyzer and for two stand-in models'
 * answers after the evidence check (docs/analysis.md). Run from the
 * repository's root. */
#include "../c/fold_score.h"

static int report(const char *name, fold_analyzer how, int held_out_only)
{
    fold_score s;
    if (fold_score_corpus(&s, how, held_out_only) != 0)
        return 1;
    printf("BENCH %s_precision %.4f\n", name, fold_precision(&s));
    printf("BENCH %s_recall %.4f\n", name, fold_recall(&s));
    if (s.first_wrong[0] != '\0')
        fprintf(stderr, "%s: first wrong pair: %s\n", name, s.first_wrong);
    return 0;
}

int main(void)
{
    fold_score s;
    if (fold_score_corpus(&s, FOLD_OFFLINE, 0) != 0)
        return 1;
    printf("BENCH fold_scenarios %zu\n", s.scenarios);
    return report("fold", FOLD_OFFLINE, 0) || report("fold_held_out", FOLD_OFFLINE, 1) ||
           report("fold_model_all_in_one", FOLD_MODEL_ALL_IN_ONE, 0) ||
           report("fold_model_labels", FOLD_MODEL_LABELS, 0);
}
