"""The live testbed: four real services in their own network namespaces and cgroups, a load
generator, and a library of reversible faults with ground-truth labels.

Data flow is the folder structure: ``topology`` builds the namespaces/veths/bridge/cgroups and
starts ``service`` processes; ``loadgen`` drives them; ``faults/`` bends one kernel mechanism under
one service; ``recorder`` exports what the store saw as fixtures and RCAEval-style cases.
Everything here needs root.
"""
