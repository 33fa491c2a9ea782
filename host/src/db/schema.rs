//! The tables, as diesel sees them. Both backends share this one schema: the
//! migrations in `migrations/sqlite` and `migrations/postgres` must agree with
//! it, and the migration tests check that they do.

diesel::table! {
    tenants (id) {
        id -> BigInt,
        name -> Text,
        parent_tenant_id -> Nullable<BigInt>,
        created_at -> BigInt,
        kind -> Text,
        suspended_at -> Nullable<BigInt>,
        suspended_by -> Nullable<Text>,
        email -> Nullable<Text>,
    }
}

diesel::table! {
    accounts (id) {
        id -> BigInt,
        code -> Text,
        kind -> Text,
        tenant_id -> Nullable<BigInt>,
        credit_limit -> Nullable<BigInt>,
        debits_posted -> BigInt,
        credits_posted -> BigInt,
        debits_pending -> BigInt,
        credits_pending -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    transfers (seq) {
        seq -> BigInt,
        id -> Text,
        kind -> Text,
        debit_account_id -> BigInt,
        credit_account_id -> BigInt,
        amount -> BigInt,
        pending_id -> Nullable<Text>,
        memo -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    grants (id) {
        id -> Text,
        account_id -> BigInt,
        source -> Text,
        priority -> Integer,
        amount -> BigInt,
        remaining -> BigInt,
        reserved -> BigInt,
        expires_at -> Nullable<BigInt>,
        expired -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    holds (id) {
        id -> Text,
        debit_account_id -> BigInt,
        credit_account_id -> BigInt,
        amount -> BigInt,
        timeout_us -> BigInt,
        expires_at -> BigInt,
        state -> Text,
        resolved_by -> Nullable<Text>,
    }
}

diesel::table! {
    allocations (transfer_id, grant_id) {
        transfer_id -> Text,
        grant_id -> Text,
        amount -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    accounts,
    transfers,
    grants,
    holds,
    allocations
);

diesel::table! {
    plugin_versions (name, version) {
        name -> Text,
        version -> Text,
        kind -> Text,
        api_version -> Text,
        manifest -> Text,
        wasm -> Binary,
        wasm_sha256 -> Text,
        approved_hosts -> Text,
        installed_at -> BigInt,
    }
}

diesel::table! {
    plugins (name) {
        name -> Text,
        active_version -> Text,
        updated_at -> BigInt,
        reseller_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    plugin_enablements (tenant_id, plugin) {
        tenant_id -> BigInt,
        plugin -> Text,
        settings -> Text,
        enabled -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    plugin_kv (tenant_id, plugin, key) {
        tenant_id -> BigInt,
        plugin -> Text,
        key -> Text,
        value -> Binary,
        size_bytes -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        tenant_id -> Nullable<BigInt>,
        role -> Text,
        name -> Text,
        prefix -> Text,
        secret_sha256 -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    usage_records (id) {
        id -> Text,
        tenant_id -> BigInt,
        plugin -> Text,
        version -> Text,
        function -> Text,
        units -> BigInt,
        credits -> BigInt,
        held -> BigInt,
        fuel -> BigInt,
        duration_us -> BigInt,
        outcome -> Text,
        error -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        period -> Text,
        state -> Text,
        created_at -> BigInt,
        reseller_id -> Nullable<BigInt>,
        wholesale_held -> BigInt,
        wholesale -> BigInt,
    }
}

diesel::table! {
    usage_counters (tenant_id, plugin, function, period) {
        tenant_id -> BigInt,
        plugin -> Text,
        function -> Text,
        period -> Text,
        units -> BigInt,
    }
}

diesel::table! {
    idempotency_keys (tenant_id, key) {
        tenant_id -> BigInt,
        key -> Text,
        request_sha256 -> Text,
        state -> Text,
        status -> Nullable<Integer>,
        response -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    idempotency_keys,
    usage_records,
    usage_counters,
    api_keys,
    plugin_kv,
    plugins,
    plugin_versions,
    plugin_enablements,
    tenants
);

diesel::table! {
    invoice_series (issuer, kind) {
        issuer -> Text,
        kind -> Text,
        last_number -> BigInt,
    }
}

diesel::table! {
    invoices (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        kind -> Text,
        issuer -> Text,
        number -> Nullable<BigInt>,
        state -> Text,
        currency -> Text,
        subtotal_minor -> BigInt,
        tax_rate -> Text,
        tax_name -> Text,
        tax_minor -> BigInt,
        total_minor -> BigInt,
        credits_invoice_id -> Nullable<BigInt>,
        created_at -> BigInt,
        finalized_at -> Nullable<BigInt>,
        closed_at -> Nullable<BigInt>,
        reseller_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    invoice_lines (invoice_id, position) {
        invoice_id -> BigInt,
        position -> Integer,
        description -> Text,
        quantity -> BigInt,
        unit_price_minor -> BigInt,
        amount_minor -> BigInt,
    }
}

diesel::joinable!(invoice_lines -> invoices (invoice_id));
diesel::allow_tables_to_appear_in_same_query!(invoices, invoice_lines);

diesel::table! {
    subscriptions (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        plan -> Text,
        next_plan -> Nullable<Text>,
        state -> Text,
        anchor -> BigInt,
        current_period -> Integer,
        cancel_at_period_end -> Bool,
        created_at -> BigInt,
        canceled_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    subscription_periods (subscription_id, period) {
        subscription_id -> BigInt,
        period -> Integer,
        plan -> Text,
        starts_at -> BigInt,
        ends_at -> BigInt,
        invoice_id -> BigInt,
        granted -> Bool,
    }
}

diesel::table! {
    subscription_changes (id) {
        id -> BigInt,
        subscription_id -> BigInt,
        period -> Integer,
        from_plan -> Text,
        to_plan -> Text,
        invoice_id -> BigInt,
        granted -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    purchases (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        package -> Text,
        credits -> BigInt,
        invoice_id -> BigInt,
        granted -> Bool,
        created_at -> BigInt,
    }
}

diesel::joinable!(subscription_periods -> subscriptions (subscription_id));
diesel::joinable!(subscription_changes -> subscriptions (subscription_id));

diesel::table! {
    payment_methods (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        provider -> Text,
        method -> Text,
        token -> Text,
        label -> Text,
        is_default -> Bool,
        created_at -> BigInt,
        removed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    payments (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        invoice_id -> BigInt,
        payment_method_id -> BigInt,
        provider -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        state -> Text,
        provider_reference -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        instructions -> Nullable<Text>,
        created_at -> BigInt,
        settled_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    payment_events (provider, event_id) {
        provider -> Text,
        event_id -> Text,
        kind -> Text,
        provider_reference -> Text,
        payment_id -> Nullable<BigInt>,
        received_at -> BigInt,
    }
}

diesel::table! {
    collections (invoice_id) {
        invoice_id -> BigInt,
        tenant_id -> BigInt,
        subscription_id -> BigInt,
        failures -> Integer,
        next_attempt_at -> Nullable<BigInt>,
        state -> Text,
    }
}

diesel::joinable!(payments -> payment_methods (payment_method_id));
diesel::allow_tables_to_appear_in_same_query!(payments, payment_methods);

diesel::table! {
    refunds (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        payment_id -> BigInt,
        amount_minor -> BigInt,
        state -> Text,
        provider_reference -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        credit_note_id -> Nullable<BigInt>,
        credits_revoked -> BigInt,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    invoices,
    purchases,
    subscriptions,
    subscription_periods,
    subscription_changes,
    payments
);

diesel::table! {
    usage_daily (tenant_id, day, plugin, function) {
        tenant_id -> BigInt,
        day -> Text,
        plugin -> Text,
        function -> Text,
        calls -> BigInt,
        failed -> BigInt,
        units -> BigInt,
        credits -> BigInt,
        fuel -> BigInt,
        duration_us -> BigInt,
    }
}

diesel::table! {
    usage_platform_daily (day, plugin, function) {
        day -> Text,
        plugin -> Text,
        function -> Text,
        calls -> BigInt,
        failed -> BigInt,
        units -> BigInt,
        credits -> BigInt,
        fuel -> BigInt,
        duration_us -> BigInt,
    }
}

diesel::table! {
    usage_monthly (tenant_id, month) {
        tenant_id -> BigInt,
        month -> Text,
        calls -> BigInt,
        credits -> BigInt,
    }
}

diesel::table! {
    revenue_daily (seller, day, currency, source, method) {
        day -> Text,
        currency -> Text,
        source -> Text,
        method -> Text,
        invoices -> BigInt,
        paid_minor -> BigInt,
        paid_tax_minor -> BigInt,
        refunds -> BigInt,
        refunded_minor -> BigInt,
        refunded_tax_minor -> BigInt,
        seller -> BigInt,
    }
}

diesel::table! {
    revenue_monthly (seller, tenant_id, month, currency) {
        tenant_id -> BigInt,
        month -> Text,
        currency -> Text,
        paid_minor -> BigInt,
        refunded_minor -> BigInt,
        seller -> BigInt,
    }
}

diesel::table! {
    mrr_customers (seller, tenant_id) {
        tenant_id -> BigInt,
        currency -> Text,
        mrr_12 -> BigInt,
        plans -> Text,
        first_at -> BigInt,
        churned_at -> Nullable<BigInt>,
        updated_at -> BigInt,
        seller -> BigInt,
    }
}

diesel::table! {
    mrr_movements (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        at -> BigInt,
        month -> Text,
        currency -> Text,
        kind -> Text,
        delta_12 -> BigInt,
        mrr_12 -> BigInt,
        plans -> Text,
        seller -> BigInt,
    }
}

diesel::table! {
    mrr_monthly (seller, month, currency, kind) {
        month -> Text,
        currency -> Text,
        kind -> Text,
        movements -> BigInt,
        delta_12 -> BigInt,
        seller -> BigInt,
    }
}

diesel::table! {
    leads (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        first_name -> Nullable<Text>,
        last_name -> Nullable<Text>,
        email -> Nullable<Text>,
        title -> Nullable<Text>,
        company -> Nullable<Text>,
        domain -> Nullable<Text>,
        linkedin_url -> Nullable<Text>,
        phone -> Nullable<Text>,
        location -> Nullable<Text>,
        time_zone -> Nullable<Text>,
        company_size -> Nullable<BigInt>,
        custom_fields -> Text,
        email_key -> Nullable<Text>,
        linkedin_key -> Nullable<Text>,
        name_key -> Nullable<Text>,
        search_text -> Text,
        do_not_contact -> Nullable<Text>,
        do_not_contact_at -> Nullable<BigInt>,
        score -> BigInt,
        score_changes_at -> Nullable<BigInt>,
        source -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    lead_tags (lead_id, tag) {
        lead_id -> BigInt,
        tenant_id -> BigInt,
        tag -> Text,
    }
}

diesel::table! {
    lead_events (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        lead_id -> BigInt,
        kind -> Text,
        occurred_at -> BigInt,
        detail -> Nullable<Text>,
        step_run_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    suppressions (tenant_id, address_hash) {
        tenant_id -> BigInt,
        address_hash -> Text,
        reason -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    scoring_rules (tenant_id) {
        tenant_id -> BigInt,
        rules -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    mailboxes (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        plugin -> Text,
        address -> Text,
        name -> Nullable<Text>,
        daily_cap -> Nullable<BigInt>,
        hourly_cap -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    sequences (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        name -> Text,
        status -> Text,
        version -> BigInt,
        time_zone -> Text,
        window_start_minute -> BigInt,
        window_end_minute -> BigInt,
        window_days -> BigInt,
        tracking -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    sequence_steps (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        sequence_id -> BigInt,
        version -> BigInt,
        position -> BigInt,
        kind -> Text,
        config -> Text,
    }
}

diesel::table! {
    enrollments (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        sequence_id -> BigInt,
        version -> BigInt,
        lead_id -> BigInt,
        status -> Text,
        reason -> Nullable<Text>,
        position -> BigInt,
        next_run_at -> Nullable<BigInt>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    step_runs (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        enrollment_id -> BigInt,
        step_id -> BigInt,
        variant -> Nullable<BigInt>,
        status -> Text,
        mailbox_id -> Nullable<BigInt>,
        recipient -> Nullable<Text>,
        delivery_id -> Nullable<Text>,
        call_id -> Nullable<Text>,
        detail -> Nullable<Text>,
        started_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        opened_at -> Nullable<BigInt>,
        clicked_at -> Nullable<BigInt>,
        replied_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        title -> Text,
        kind -> Text,
        lead_id -> Nullable<BigInt>,
        step_run_id -> Nullable<BigInt>,
        due_at -> Nullable<BigInt>,
        status -> Text,
        notes -> Nullable<Text>,
        created_at -> BigInt,
        completed_at -> Nullable<BigInt>,
        deal_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    pipelines (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    stages (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        pipeline_id -> BigInt,
        name -> Text,
        position -> BigInt,
        outcome -> Nullable<Text>,
        removed -> Bool,
    }
}

diesel::table! {
    stage_rules (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        stage_id -> BigInt,
        action -> Text,
        config -> Text,
        removed -> Bool,
    }
}

diesel::table! {
    deals (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        pipeline_id -> BigInt,
        stage_id -> BigInt,
        position -> BigInt,
        title -> Text,
        value_minor -> BigInt,
        currency -> Text,
        owner -> Nullable<Text>,
        lead_id -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    deal_moves (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        deal_id -> BigInt,
        from_stage_id -> Nullable<BigInt>,
        to_stage_id -> BigInt,
        moved_at -> BigInt,
    }
}

diesel::table! {
    rule_firings (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        rule_id -> BigInt,
        move_id -> BigInt,
        status -> Text,
        detail -> Nullable<Text>,
        lease_until -> Nullable<BigInt>,
        fired_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    leads,
    lead_tags,
    lead_events,
    mailboxes,
    sequences,
    sequence_steps,
    enrollments,
    step_runs,
    tasks,
    pipelines,
    stages,
    stage_rules,
    deals,
    deal_moves,
    rule_firings
);

diesel::allow_tables_to_appear_in_same_query!(
    usage_daily,
    usage_platform_daily,
    usage_monthly,
    revenue_daily,
    revenue_monthly,
    mrr_customers,
    mrr_movements,
    mrr_monthly,
    tenants,
    subscriptions
);

diesel::table! {
    web_sessions (id) {
        id -> BigInt,
        secret_sha256 -> Text,
        key_id -> BigInt,
        csrf_token -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::joinable!(web_sessions -> api_keys (key_id));
diesel::allow_tables_to_appear_in_same_query!(web_sessions, api_keys);

diesel::table! {
    reseller_settings (reseller_id) {
        reseller_id -> BigInt,
        pricing -> Text,
        alert_thresholds -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    reseller_alerts (id) {
        id -> BigInt,
        reseller_id -> BigInt,
        threshold -> BigInt,
        balance -> BigInt,
        call_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    wholesale_charges (id) {
        id -> BigInt,
        reseller_id -> BigInt,
        tenant_id -> BigInt,
        invoice_id -> BigInt,
        description -> Text,
        currency -> Text,
        retail_minor -> BigInt,
        wholesale_minor -> BigInt,
        period -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    reseller_brands (reseller_id) {
        reseller_id -> BigInt,
        domain -> Nullable<Text>,
        document -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    reseller_approvals (reseller_id) {
        reseller_id -> BigInt,
        kinds -> Text,
        http_hosts -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    reseller_invoices (reseller_id, month) {
        reseller_id -> BigInt,
        month -> Text,
        invoice_id -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    mail_outbox (id) {
        id -> BigInt,
        tenant_id -> BigInt,
        topic -> Text,
        subject_id -> BigInt,
        recipient -> Text,
        state -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        last_error -> Nullable<Text>,
        response -> Nullable<Text>,
        created_at -> BigInt,
        sent_at -> Nullable<BigInt>,
    }
}

diesel::joinable!(mail_outbox -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(mail_outbox, tenants);
