/* `self_heal_port group`: the template miner on stdin (see group.c). */
#ifndef SELF_HEAL_PORT_GROUP_H
#define SELF_HEAL_PORT_GROUP_H

int group_main(int argc, char **argv);

#endif
