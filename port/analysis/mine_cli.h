/* `self_heal_port group`: the template miner on stdin (see mine_cli.c). */
#ifndef SELF_HEAL_PORT_MINE_CLI_H
#define SELF_HEAL_PORT_MINE_CLI_H

int group_main(int argc, char **argv);

#endif
