/*
 * ponte from its command line to its exit status (main.c): the executable's main() runs it, and so does the
 * extension module's main() inside python3 (gateway/host.c), which is why it is declared apart from the app seam.
 */
#ifndef PT_MAIN_H
#define PT_MAIN_H

int pt_main(int argc, char **argv);

#endif
