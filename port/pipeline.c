/* Placeholder: the pipeline module's command table, filled in as it is written. */
#include "pipeline.h"

const cmd_def *pipeline_commands(size_t *n)
{
    static const cmd_def cmds[] = {{NULL, NULL, 0}};
    *n = 0;
    return cmds;
}

int port_configure_modules(port_ctx *ctx, cmd_error *err)
{
    (void)ctx;
    (void)err;
    return 0;
}

void port_close_modules(port_ctx *ctx)
{
    (void)ctx;
}
