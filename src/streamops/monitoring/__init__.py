"""Day-one monitoring: metrics from each batch's progress, exporters, alert rules, paging, reports."""
