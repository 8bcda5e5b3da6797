// crdcheck validates the Architecture CRD and objects against it with the API server's own code
// (k8s.io/apiextensions-apiserver): CRD validation (structural schema, CEL compilation, estimated cost),
// then pruning, defaulting, OpenAPI, list-type (unique keys of list-maps) and CEL validation of objects, as a
// create or an update.
//
//	crdcheck CRD.yaml crd            -> JSON list of the CRD's validation errors
//	crdcheck CRD.yaml objects < in   -> in: JSON list of {"obj": {...}, "old": {...} or null};
//	                                    (numbers decoded as the API server does: int64 or float64)
//	                                    out: JSON list of {"errors": [...], "obj": defaulted object}
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

type item struct {
	Obj map[string]interface{} `json:"obj"`
	Old map[string]interface{} `json:"old"`
}

type result struct {
	Errors []string               `json:"errors"`
	Obj    map[string]interface{} `json:"obj"`
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "crdcheck:", err)
	os.Exit(2)
}

func main() {
	if len(os.Args) != 3 {
		fail(fmt.Errorf("usage: crdcheck CRD.yaml crd|objects"))
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	var v1 apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(raw, &v1); err != nil {
		fail(err)
	}
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&v1)
	var crd apiextensions.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, &crd, nil); err != nil {
		fail(err)
	}
	ctx := context.Background()
	out := json.NewEncoder(os.Stdout)
	if os.Args[2] == "crd" {
		errs := []string{}
		for _, e := range crdvalidation.ValidateCustomResourceDefinition(ctx, &crd) {
			errs = append(errs, e.Error())
		}
		_ = out.Encode(errs)
		return
	}
	var schema *apiextensions.JSONSchemaProps
	if crd.Spec.Versions[0].Schema != nil {
		schema = crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	} else {
		schema = crd.Spec.Validation.OpenAPIV3Schema
	}
	structural, err := structuralschema.NewStructural(schema)
	if err != nil {
		fail(err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(schema)
	if err != nil {
		fail(err)
	}
	celValidator := cel.NewValidator(structural, true, celconfig.PerCallLimit)
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var items []item
	if err := utiljson.Unmarshal(in, &items); err != nil {
		fail(err)
	}
	results := []result{}
	for _, it := range items {
		var old interface{}
		if it.Old != nil {
			structuralpruning.Prune(it.Old, structural, true)
			structuraldefaulting.Default(it.Old, structural)
			old = it.Old
		}
		structuralpruning.Prune(it.Obj, structural, true)
		structuraldefaulting.Default(it.Obj, structural)
		var errs field.ErrorList
		if old == nil {
			errs = apiservervalidation.ValidateCustomResource(nil, it.Obj, validator)
			errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, structural, it.Obj)...)
		} else {
			errs = apiservervalidation.ValidateCustomResourceUpdate(nil, it.Obj, old, validator)
			// As the custom resource strategy: list-maps are checked on update only if the old object's were
			// valid (an object stored before the rule keeps its duplicates).
			if len(structurallisttype.ValidateListSetsAndMaps(nil, structural, it.Old)) == 0 {
				errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, structural, it.Obj)...)
			}
		}
		celErrs, _ := celValidator.Validate(ctx, nil, structural, it.Obj, old, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
		msgs := []string{}
		for _, e := range errs {
			msgs = append(msgs, e.Error())
		}
		results = append(results, result{Errors: msgs, Obj: it.Obj})
	}
	_ = out.Encode(results)
}
